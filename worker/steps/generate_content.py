"""`generate_content`: one message per row that has none yet (a re-run keeps earlier ones).

The provider comes from the step's settings (web.domain.workflows). Local templates render every
row and save them in one batch. Remote providers generate `concurrency` rows at a time and save
each row as soon as it is done, so a crash loses at most the rows in flight. A row the provider
fails on gets its error and no content (it then fails compliance and ends `failed` with that
error); the run goes on. An error no row can get past (ProviderUnusable: a refused key, a wrong
URL, nothing listening) stops the step at once, rows in flight cancelled: the execution fails
with that one message instead of every row failing in turn.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from web.domain import execution_rows
from web.domain.execution_rows import RowState
from worker.concurrency import map_bounded
from worker.providers.content import content_provider
from worker.providers.types import (
    ContentProvider,
    ProviderConfigError,
    ProviderContext,
    ProviderError,
    ProviderUnusable,
)
from worker.steps.context import StepContext, StepError, keeping_lease

Item = tuple[UUID, str | None, str | None, dict[str, Any] | None]


async def _generate(provider: ContentProvider, row: RowState) -> Item:
    try:
        generated = await provider.generate(row.data)
    except ProviderUnusable:
        raise
    except ProviderError as exc:
        return (row.id, None, f"Content generation failed: {exc}", None)
    return (row.id, generated.content, None, generated.usage)


async def _generate_remote(provider: ContentProvider, rows: list[RowState]) -> list[Item]:
    stopping: list[ProviderUnusable] = []

    async def one(row: RowState) -> Item:
        if stopping:  # set before the error spreads: no row starts after it
            raise stopping[0]
        try:
            item = await _generate(provider, row)
        except ProviderUnusable as exc:
            stopping.append(exc)
            raise
        await execution_rows.save_generated([item])  # at once: a re-run never pays for it again
        return item

    return await map_bounded(rows, provider.concurrency, one)


async def run(ctx: StepContext) -> dict[str, Any]:
    try:
        provider = content_provider(ctx.step_settings, ProviderContext(ctx.http, ctx.execution_id))
    except ProviderConfigError as exc:
        raise StepError(str(exc)) from exc
    rows = [r for r in await execution_rows.load(ctx.execution_id) if r.generated_content is None]
    try:
        if provider.remote:
            items = await keeping_lease(ctx, _generate_remote(provider, rows))
        else:
            items = [await _generate(provider, row) for row in rows]
            await execution_rows.save_generated(items)
    except ProviderUnusable as exc:
        raise StepError(str(exc)) from None
    failed = sum(1 for item in items if item[2])
    summary: dict[str, Any] = {"generated": len(items) - failed, "failed": failed}
    usages = [item[3] for item in items if item[3]]
    if usages:
        summary["usage"] = {
            key: sum(u[key] for u in usages if isinstance(u.get(key), int))
            for key in ("prompt_tokens", "completion_tokens", "total_tokens")
        }
    return summary
