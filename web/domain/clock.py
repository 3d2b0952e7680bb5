"""The current time, and the one wire format for times (public-api.md: ISO 8601, UTC, ms, "Z").

Everything that asks "what time is it?" goes through `now()`, so tests can move the clock
(month rollover of quotas) without patching datetime. A worker process started with
`FLOWGATE_CLOCK_OFFSET_SECONDS` (tests only: it moves the process's idea of the time, e.g. to
a few seconds before a send window opens) runs with that offset; `real()` turns a time of this
clock back into the wall clock's, for what Redis schedules (arq's deferred jobs).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset = timedelta(0)


def now() -> datetime:
    return datetime.now(UTC) + _offset


def shift(delta: timedelta) -> None:
    """Move this process's clock by `delta` (tests only: e.g. to the next month)."""
    global _offset
    _offset += delta


def real(value: datetime) -> datetime:
    """The wall-clock time of `value`, a time of this clock (they differ by the offset)."""
    return value - _offset


def set_offset(seconds: float) -> None:
    """This process's clock runs `seconds` ahead of the wall clock
    (FLOWGATE_CLOCK_OFFSET_SECONDS)."""
    global _offset
    _offset = timedelta(seconds=seconds)


def reset() -> None:
    global _offset
    _offset = timedelta(0)


def iso(value: datetime | None) -> str | None:
    """`2025-10-23T14:30:45.067Z`, or None."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
