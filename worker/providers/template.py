"""The `template` content provider: a sandboxed Jinja2 template over the row's fields."""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment

_env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


class TemplateProvider:
    def __init__(self, settings: dict[str, Any]) -> None:
        source = settings.get("template")
        if not isinstance(source, str) or not source.strip():
            raise ValueError("settings.template is required")
        try:
            self._template = _env.from_string(source)
        except TemplateError as exc:
            raise ValueError(f"settings.template is not a valid template: {exc}") from exc

    def render(self, row: dict[str, Any]) -> str:
        return self._template.render(**row).strip()
