"""Compliance rules of the `compliance_check` step, as a pure function of settings, row and
message. Shared by the worker (the step) and the dashboard (re-checking an edited message)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from web.domain.statuses import ComplianceStatus
from web.domain.types import RowData, StepSettings

E164 = re.compile(r"\+[1-9]\d{7,14}")


@dataclass(frozen=True)
class Verdict:
    status: ComplianceStatus
    reasons: list[str]


def check(settings: StepSettings, row: RowData, message: str | None) -> Verdict:
    """Every rule that fails adds one human-readable reason; no reasons means passed."""
    reasons: list[str] = []
    text = message or ""
    if not text.strip():
        reasons.append("Generated content is empty")
    lowered = text.lower()
    for phrase in settings.get("banned_phrases", []):
        if phrase.lower() in lowered:
            reasons.append(f"Contains banned phrase: {phrase!r}")
    for required in settings.get("required_text", []):
        if required.lower() not in lowered:
            reasons.append(f"Missing required text: {required!r}")
    max_length = settings.get("max_length")
    if max_length is not None and len(text) > int(max_length):
        reasons.append(f"Message is {len(text)} characters, over the maximum of {max_length}")
    for field in settings.get("required_fields", []):
        value = row.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            reasons.append(f"Missing required field: {field}")
    phone_field = settings.get("phone_field")
    if phone_field:
        phone = row.get(phone_field)
        if phone is not None and not E164.fullmatch(str(phone).strip()):
            reasons.append(f"{phone_field} is not an E.164 phone number: {phone!r}")
    status = ComplianceStatus.FAILED if reasons else ComplianceStatus.PASSED
    return Verdict(status=status, reasons=reasons)
