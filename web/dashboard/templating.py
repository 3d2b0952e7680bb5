"""Filters the dashboard templates share (registered on the Jinja environment at start)."""

from __future__ import annotations

import json
from typing import Any

from litestar.plugins.jinja import JinjaTemplateEngine

from web.domain import clock


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def register_template_helpers(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters["iso"] = clock.iso
    engine.engine.filters["pretty_json"] = pretty_json
