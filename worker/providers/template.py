"""The `template` content provider: a sandboxed Jinja2 template over the row's fields. The same
sandbox renders the prompts of the `openai_compatible` provider."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Template, TemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from worker.providers.types import Generated, ProviderConfigError, ProviderContext, ProviderError

_env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=256)
def _compiled(source: str) -> Template:
    # Compiling costs more than rendering 100 rows: every execution of a workflow shares one.
    return _env.from_string(source)


def compile_template(settings: dict[str, Any], setting: str) -> Template:
    source = settings.get(setting)
    if not isinstance(source, str) or not source.strip():
        raise ProviderConfigError(f"settings.{setting} is required")
    try:
        return _compiled(source)
    except TemplateError as exc:
        raise ProviderConfigError(f"settings.{setting} is not a valid template: {exc}") from exc


def render(template: Template, row: dict[str, Any]) -> str:
    """The template over the row; ProviderError (this row fails) if it cannot render: a bad
    value of this row's (`{{ 100 // score }}` with a score of 0) fails the row, not the run."""
    try:
        return template.render(**row).strip()
    except (TemplateError, SecurityError, TypeError, ValueError, ArithmeticError) as exc:
        raise ProviderError(str(exc)) from exc


class TemplateProvider:
    remote = False
    concurrency = 1

    def __init__(self, settings: dict[str, Any]) -> None:
        self._template = compile_template(settings, "template")

    @classmethod
    def for_step(cls, settings: dict[str, Any], context: ProviderContext) -> TemplateProvider:
        return cls(settings)

    def render(self, row: dict[str, Any]) -> str:
        return render(self._template, row)

    async def generate(self, row: dict[str, Any]) -> Generated:
        return Generated(self.render(row))
