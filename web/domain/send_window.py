"""Sending hours of a `send_message` step: `sendWindow: {start: "09:00", end: "21:00",
timezone: "Asia/Kolkata"}`.

The window is open from `start` (included) to `end` (excluded), every day, in the IANA zone
`timezone`. A window whose end is earlier than its start crosses midnight: `21:00`-`06:00` is
open from 21:00 until 06:00 the next morning. `start` equal to `end` is refused (it would say
neither "always" nor "never" clearly). On days a clock change skips or repeats an hour, the
wall-clock times are read as zoneinfo does (the first of a repeated hour; a skipped one as if
the clock had not moved yet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_HH_MM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def problems(value: Any, path: str) -> list[str]:
    """What is wrong with a `sendWindow` setting, each naming its path; [] when valid."""
    if not isinstance(value, dict):
        return [f"{path}: must be an object with start, end and timezone"]
    found = [f"{path}.{name}: unknown field" for name in value if name not in _FIELDS]
    for name in ("start", "end"):
        item = value.get(name)
        if item is None:
            found.append(f"{path}.{name}: required")
        elif not isinstance(item, str) or not _HH_MM.fullmatch(item):
            found.append(f"{path}.{name}: must be a time of day as HH:MM (00:00 to 23:59)")
    zone = value.get("timezone")
    if zone is None:
        found.append(f"{path}.timezone: required")
    elif not isinstance(zone, str) or _zone(zone) is None:
        found.append(
            f"{path}.timezone: must be an IANA time zone name such as Asia/Kolkata, got {zone!r}"
        )
    if not found and value["start"] == value["end"]:
        found.append(f"{path}: start and end must differ (the window would be empty)")
    return found


_FIELDS = ("start", "end", "timezone")


def _zone(name: str) -> ZoneInfo | None:
    if not name or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _time(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


@dataclass(frozen=True)
class SendWindow:
    start: time
    end: time
    zone: ZoneInfo

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> SendWindow | None:
        """The step's window, None without one. The settings were validated when the workflow
        was saved (problems above)."""
        value = settings.get("sendWindow")
        if not isinstance(value, dict):
            return None
        zone = _zone(str(value["timezone"]))
        if zone is None:
            raise ValueError(f"unknown time zone {value['timezone']!r}")
        return cls(_time(value["start"]), _time(value["end"]), zone)

    def is_open(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # crosses midnight

    def next_open(self, moment: datetime) -> datetime | None:
        """None while the window is open at `moment`; else when it next opens (aware, in the
        window's zone)."""
        if self.is_open(moment):
            return None
        local = moment.astimezone(self.zone)
        for days in (0, 1, 2):
            day = local.date() + timedelta(days=days)
            opening = datetime.combine(day, self.start, tzinfo=self.zone)
            if opening > local:
                return opening
        raise AssertionError("a daily window opens within two days")  # pragma: no cover
