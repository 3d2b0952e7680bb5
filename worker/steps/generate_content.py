"""`generate_content`: one message per row that has none yet (a re-run keeps earlier ones)."""

from __future__ import annotations

from typing import Any

from jinja2.exceptions import SecurityError, TemplateError

from web.domain import execution_rows
from worker.providers.template import TemplateProvider
from worker.steps import StepContext, StepError


async def run(ctx: StepContext) -> dict[str, Any]:
    provider_name = ctx.settings.get("provider", "template")
    if provider_name != "template":
        raise StepError(f"Unknown content provider {provider_name!r}")
    try:
        provider = TemplateProvider(ctx.settings)
    except ValueError as exc:
        raise StepError(str(exc)) from exc
    rows = [r for r in await execution_rows.load(ctx.execution_id) if r.generated_content is None]
    items: list[tuple[Any, str | None, str | None]] = []
    for row in rows:
        try:
            items.append((row.id, provider.render(row.data), None))
        except (TemplateError, SecurityError, TypeError, ValueError) as exc:
            items.append((row.id, None, f"Content generation failed: {exc}"))
    await execution_rows.save_generated(items)
    failed = sum(1 for item in items if item[2])
    return {"generated": len(items) - failed, "failed": failed}
