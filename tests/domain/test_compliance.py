"""The compliance rules of the BFSI template, one rule at a time."""

from __future__ import annotations

import pytest

from web.domain.compliance import check
from web.domain.workflows import BFSI_TEMPLATE

SETTINGS = BFSI_TEMPLATE["steps"][1]["settings"]
ROW = {"customerId": "C1", "name": "John Doe", "phone": "+918610560986"}
GOOD = "Dear John, a special offer for you. T&C apply. Reply STOP to opt out."


def test_a_clean_message_passes() -> None:
    verdict = check(SETTINGS, ROW, GOOD)
    assert (verdict.status, verdict.reasons) == ("passed", [])


@pytest.mark.parametrize(
    ("row", "message", "reason"),
    [
        (ROW, GOOD.replace("a special", "Guaranteed Returns on a"),
         "Contains banned phrase: 'guaranteed returns'"),
        (ROW, "Dear John, a special offer.", "Missing required text: 'Reply STOP to opt out'"),
        (ROW, GOOD + " " + "x" * 1000, "Message is 1070 characters, over the maximum of 1000"),
        ({**ROW, "phone": "8610560986"}, GOOD,
         "phone is not an E.164 phone number: '8610560986'"),
        ({**ROW, "phone": "+0123456789"}, GOOD,
         "phone is not an E.164 phone number: '+0123456789'"),
        ({**ROW, "name": " "}, GOOD, "Missing required field: name"),
        (ROW, "", "Generated content is empty"),
    ],
)  # fmt: skip
def test_each_rule_fails_with_its_reason(row: dict[str, str], message: str, reason: str) -> None:
    verdict = check(SETTINGS, row, message)
    assert verdict.status == "failed"
    assert reason in verdict.reasons
