"""The suppression list: phone numbers that opted out, never to be messaged. Numbers are kept in
E.164 (`+` and 8 to 15 digits), normalised from what people type; the CLI, the dashboard, the
inbound STOP messages and the CSV import all go through the functions here. Phone numbers are
personal data: `mask()` is how they appear in logs. Imports only web.domain."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from web.domain import pool
from web.domain.errors import NotFound
from web.domain.field_errors import FieldError
from web.domain.types import ReadModel, from_row

OPTED_OUT = "recipient opted out"  # the reason of a row skipped for it (issue 16)
E164 = re.compile(r"\+[1-9]\d{7,14}")
_FORMATTING = re.compile(r"[\s\-().]")
MAX_REASON = 500
NOT_E164 = (
    "Phone number must be in E.164 form: + then the country code and number, "
    "8 to 15 digits (e.g. +919876543210)"
)


class Source(StrEnum):
    INBOUND = "inbound"
    CLI = "cli"
    DASHBOARD = "dashboard"
    IMPORT = "import"


def normalise(phone: str) -> str:
    """`+91 98765-43210`, `(+91) 9876543210`, `0091 98765 43210` -> `+919876543210`;
    FieldError("phone") for anything that is not an E.164 number then."""
    text = _FORMATTING.sub("", phone or "")
    if text.startswith("00"):
        text = "+" + text[2:]
    if not E164.fullmatch(text):
        raise FieldError("phone", NOT_E164)
    return text


def recipient_key(value: object) -> str | None:
    """The E.164 form of a row's recipient field, as the messaging providers read it: WhatsApp
    takes its digits (with the country code), so `919876543210` is `+919876543210`. None when
    it cannot be a number."""
    text = _FORMATTING.sub("", str(value or ""))
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text.startswith("+"):
        text = "+" + text
    return text if E164.fullmatch(text) else None


def mask(phone: str | None) -> str:
    """How a number appears in logs: its last two digits only (`+*********10`)."""
    text = phone or ""
    return ("*" * max(len(text) - 2, 0)) + text[-2:] if len(text) > 4 else "***"


class SuppressionView(ReadModel, frozen=True):
    phone: str
    reason: str | None
    source: str
    created_at: datetime


def _reason(reason: str | None) -> str | None:
    text = (reason or "").strip()
    if len(text) > MAX_REASON:
        raise FieldError("reason", f"Reason must be at most {MAX_REASON} characters")
    return text or None


_UPSERT = (
    "INSERT INTO suppression (id, phone, reason, source, created_at) "
    "SELECT gen_random_uuid(), v.phone, v.reason, $3, now() "
    "FROM unnest($1::text[], $2::text[]) AS v(phone, reason) "
    "ON CONFLICT (phone) DO UPDATE SET reason = COALESCE(EXCLUDED.reason, suppression.reason) "
    "RETURNING (xmax = 0) AS inserted"
)


async def add(phone: str, reason: str | None, source: Source) -> bool:
    """Suppress `phone` (normalised; FieldError if it is not E.164). Already listed: its
    reason is updated when one is given. True if it was newly added."""
    normalised = normalise(phone)
    rows = await pool.fetch_rows(_UPSERT, [normalised], [_reason(reason)], str(source))
    return bool(rows[0]["inserted"])


async def remove(phone: str) -> None:
    """Take `phone` off the list; NotFound if it is not on it."""
    removed = await pool.fetch_rows(
        "DELETE FROM suppression WHERE phone = $1 RETURNING id", normalise(phone)
    )
    if not removed:
        raise NotFound("Phone number is not on the suppression list")


async def remove_if_listed(phone: str) -> bool:
    """An opt-in (START): off the list if it was on it."""
    removed = await pool.fetch_rows("DELETE FROM suppression WHERE phone = $1 RETURNING id", phone)
    return bool(removed)


async def list_suppressions(search: str = "", limit: int = 1000) -> list[SuppressionView]:
    """Newest first; `search` matches any part of the number (its digits) or of the reason."""
    digits = re.sub(r"\D", "", search)
    text = search.strip()
    rows = await pool.fetch_rows(
        "SELECT phone, reason, source, created_at FROM suppression "
        "WHERE $1 = '' OR ($2 <> '' AND phone LIKE '%' || $2 || '%') "
        "  OR reason ILIKE '%' || $1 || '%' "
        "ORDER BY created_at DESC, phone LIMIT $3",
        text,
        digits,
        limit,
    )
    return [from_row(row, SuppressionView) for row in rows]


@dataclass(frozen=True)
class ImportReport:
    added: int
    updated: int
    bad_lines: list[tuple[int, str]]  # (line number, why)


def import_csv_text(text: str) -> tuple[list[tuple[str, str | None]], list[tuple[int, str]]]:
    """The (phone, reason) pairs of a CSV with the header `phone[,reason]`, and its bad lines."""
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if not header or header[0] != "phone" or header[1:] not in ([], ["reason"]):
        raise FieldError("file", "The CSV's first line must be the header phone or phone,reason")
    pairs: dict[str, str | None] = {}
    bad: list[tuple[int, str]] = []
    for record in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if len(record) > len(header):
            bad.append((line, f"expected {len(header)} column(s), got {len(record)}"))
            continue
        try:
            phone = normalise(record[0])
            reason = _reason(record[1] if len(record) > 1 else None)
        except FieldError as exc:
            bad.append((line, exc.message))
            continue
        pairs[phone] = reason
    return list(pairs.items()), bad


async def import_csv(text: str) -> ImportReport:
    """Suppress every good line of the CSV in one statement; bad lines are reported, not fatal."""
    pairs, bad = import_csv_text(text)
    if not pairs:
        return ImportReport(0, 0, bad)
    rows = await pool.fetch_rows(
        _UPSERT, [p for p, _ in pairs], [r for _, r in pairs], str(Source.IMPORT)
    )
    added = sum(1 for row in rows if row["inserted"])
    return ImportReport(added, len(rows) - added, bad)


async def suppressed_rows(
    rows: list[tuple[UUID, Any]],
) -> list[UUID]:
    """Of (row id, recipient field value), the rows whose number is on the list."""
    keys = {row_id: recipient_key(value) for row_id, value in rows}
    phones = sorted({key for key in keys.values() if key})
    if not phones:
        return []
    listed = {
        row["phone"]
        for row in await pool.fetch_rows(
            "SELECT phone FROM suppression WHERE phone = ANY($1::text[])", phones
        )
    }
    return [row_id for row_id, key in keys.items() if key in listed]


async def skip_opted_out(rows: list[tuple[UUID, Any]]) -> list[UUID]:
    """Of (row id, recipient field value) of rows not settled yet, those whose recipient opted
    out end `skipped` with OPTED_OUT, before any content is generated for them; their ids."""
    opted_out = await suppressed_rows(rows)
    if opted_out:
        await pool.fetch_rows(
            "UPDATE execution_row SET send_status = 'skipped', error = $2 "
            "WHERE id = ANY($1::uuid[]) AND send_status IS NULL RETURNING id",
            opted_out,
            OPTED_OUT,
        )
    return opted_out


def send_field(definition: dict[str, Any]) -> str:
    """The row field the workflow sends to: the first send_message step's `to_field`."""
    for step in definition.get("steps", []):
        if step.get("type") == "send_message":
            return str((step.get("settings") or {}).get("to_field", "phone"))
    return "phone"
