"""Filters the dashboard templates share (registered on the Jinja environment at start)."""

from __future__ import annotations

import json
from typing import Any

from litestar.plugins.jinja import JinjaTemplateEngine

from web.domain import clock


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def time_left(seconds: float | None) -> str:
    """How long until a deadline, as a reviewer reads it: "2 h 5 min", "40 s", "overdue"."""
    if seconds is None:
        return "no deadline"
    whole = int(seconds)
    if whole <= 0:
        return "overdue"
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def register_template_helpers(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters["time_left"] = time_left
    engine.engine.filters["iso"] = clock.iso
    engine.engine.filters["pretty_json"] = pretty_json
