"""Durations as workflow files write them: `"48h"`, `"30m"`, `"20s"`, `"2d"`, and combinations
in descending order such as `"1h30m"`. Pure functions, no imports of our own."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
MAXIMUM = timedelta(days=365)


def parse(text: str) -> timedelta:
    """The duration `text` names; ValueError saying how to write one."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if not text or match is None or not any(match.groups()):
        raise ValueError('must be a duration such as "48h", "30m", "20s" or "1h30m"')
    seconds = sum(
        int(value) * _UNITS[unit]
        for value, unit in zip(match.groups(), _UNITS, strict=True)
        if value is not None
    )
    if seconds <= 0:
        raise ValueError("must be longer than 0 seconds")
    if seconds > MAXIMUM.total_seconds():
        raise ValueError("must be at most 365 days")
    return timedelta(seconds=seconds)
