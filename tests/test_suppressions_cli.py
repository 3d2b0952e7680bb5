"""`flowgate suppressions add|remove|list|import`, run as a real subprocess against the test
database."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.test_cli import flowgate
from web.domain.tables import Suppression

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def test_add_normalises_lists_as_json_and_adding_again_updates_the_reason() -> None:
    first = flowgate("suppressions", "add", "+91 98765-43210", "--reason", "asked by phone")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "added +919876543210\n"

    again = flowgate("suppressions", "add", "0091 9876543210", "--reason", "asked twice")
    assert again.returncode == 0, again.stderr
    assert "already listed" in again.stdout

    listed = flowgate("suppressions", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)
    assert ISO_MS.fullmatch(entry.pop("createdAt"))
    assert entry == {"phone": "+919876543210", "reason": "asked twice", "source": "cli"}


async def test_add_refuses_a_number_not_in_e164_and_stores_nothing() -> None:
    result = flowgate("suppressions", "add", "9876543210")

    assert result.returncode == 1
    assert result.stderr.startswith("error: Phone number must be in E.164 form")
    assert await Suppression.count() == 0


async def test_remove_takes_a_number_off_and_an_unlisted_one_fails_clearly() -> None:
    flowgate("suppressions", "add", "+919876543210")

    removed = flowgate("suppressions", "remove", "+91 98765 43210")
    assert removed.returncode == 0, removed.stderr
    assert await Suppression.count() == 0

    missing = flowgate("suppressions", "remove", "+919876543210")
    assert missing.returncode == 1
    assert missing.stderr == "error: Phone number is not on the suppression list\n"


async def test_import_adds_good_lines_and_reports_counts_and_bad_lines(tmp_path: Path) -> None:
    flowgate("suppressions", "add", "+447700900123", "--reason", "old")
    csv = tmp_path / "opt-outs.csv"
    csv.write_text(
        "phone,reason\n"
        "+919876543210,replied stop by SMS\n"
        "0044 7700 900123,new reason\n"
        "12345,typo\n"
        "\n"
        "+919800000001\n"
        "+919800000002,a,b\n"
    )

    result = flowgate("suppressions", "import", str(csv))

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "imported 3 number(s): 2 added, 1 already listed (reason updated); 2 bad line(s)\n"
    )
    assert result.stderr.splitlines() == [
        f"error: {csv}:4: Phone number must be in E.164 form: + then the country code and "
        "number, 8 to 15 digits (e.g. +919876543210)",
        f"error: {csv}:7: expected 2 column(s), got 3",
    ]
    listed = json.loads(flowgate("suppressions", "list", "--json").stdout)
    assert sorted((e["phone"], e["reason"], e["source"]) for e in listed) == [
        ("+447700900123", "new reason", "cli"),
        ("+919800000001", None, "import"),
        ("+919876543210", "replied stop by SMS", "import"),
    ]


async def test_import_refuses_a_file_without_the_header(tmp_path: Path) -> None:
    csv = tmp_path / "numbers.csv"
    csv.write_text("+919876543210\n")

    result = flowgate("suppressions", "import", str(csv))

    assert result.returncode == 1
    assert "header phone or phone,reason" in result.stderr
    assert await Suppression.count() == 0


def test_list_without_numbers_says_so() -> None:
    result = flowgate("suppressions", "list")
    assert result.returncode == 0
    assert result.stdout == "The suppression list is empty\n"
