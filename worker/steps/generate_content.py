"""`generate_content`: one message per row not tried yet (a re-run keeps earlier messages and
errors, so no row costs a provider call twice, except one in flight when a worker died).

The provider comes from the step's settings (web.domain.workflows). Local templates render every
row and save them in one batch. Remote providers generate `concurrency` rows at a time and save
each row as soon as it is done, so a crash loses at most the rows in flight; past the job's
deadline they start no new row and the step goes on in a new job (Unfinished). A row the
provider fails on gets its error and no content (it then fails compliance and ends `failed`
with that error); the run goes on. An error no row can get past (ProviderUnusable: a refused
key, a wrong URL, nothing listening) stops the step at once, rows in flight cancelled: the
execution fails with that one message instead of every row failing in turn. The summary
counts every row of the execution, whichever job generated it.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from msgspec.structs import replace

from web.domain import execution_rows, suppressions
from web.domain.execution_rows import RowState
from web.domain.statuses import SendStatus
from worker.concurrency import map_bounded
from worker.providers.content import content_provider
from worker.providers.types import (
    ContentProvider,
    OutOfTurn,
    ProviderConfigError,
    ProviderContext,
    ProviderError,
    ProviderUnusable,
)
from worker.steps.context import StepContext, StepError, Unfinished

Item = tuple[UUID, str | None, str | None, dict[str, Any] | None]


async def _generate(provider: ContentProvider, row: RowState) -> Item:
    try:
        generated = await provider.generate(row.data)
    except ProviderUnusable:
        raise
    except ProviderError as exc:
        return (row.id, None, f"Content generation failed: {exc}", None)
    return (row.id, generated.content, None, generated.usage)


async def _generate_remote(
    ctx: StepContext, provider: ContentProvider, rows: list[RowState]
) -> list[Item | None]:
    """Each row's item, or None for the rows not started before the job's deadline."""
    stopping: list[ProviderUnusable] = []

    async def one(row: RowState) -> Item | None:
        if stopping:  # set before the error spreads: no row starts after it
            raise stopping[0]
        if ctx.out_of_time():
            return None
        try:
            item = await _generate(provider, row)
        except ProviderUnusable as exc:
            stopping.append(exc)
            raise
        except OutOfTurn:
            return None  # no turn under the account's limit before the deadline: next job
        await execution_rows.save_generated([item])  # at once: a re-run never pays for it again
        return item

    return await map_bounded(rows, provider.concurrency, one)


async def run(ctx: StepContext) -> dict[str, Any]:
    try:
        provider = content_provider(
            ctx.step_settings,
            ProviderContext(ctx.http, ctx.execution_id, limits=ctx.provider_limits()),
        )
    except ProviderConfigError as exc:
        raise StepError(str(exc)) from exc
    rows = await ctx.rows()
    # A recipient on the suppression list costs no generation: the row ends `skipped` now.
    to_field = suppressions.send_field(ctx.definition)
    opted_out = set(
        await suppressions.skip_opted_out(
            [(r.id, r.data.get(to_field)) for r in rows if r.send_status is None]
        )
    )
    rows = [
        replace(r, send_status=SendStatus.SKIPPED, error=suppressions.OPTED_OUT)
        if r.id in opted_out
        else r
        for r in rows
    ]
    todo = [r for r in rows if r.generated_content is None and r.error is None]
    try:
        if provider.remote:
            items = await _generate_remote(ctx, provider, todo)
            if None in items:
                raise Unfinished
        else:
            items = [await _generate(provider, row) for row in todo]
            await execution_rows.save_generated([i for i in items if i is not None])
    except ProviderUnusable as exc:
        raise StepError(str(exc)) from None
    # Every row as saved now: those done by earlier jobs as loaded, this job's from its items;
    # handed on to the next step (compliance_check), which need not read them again.
    done = {item[0]: item for item in items if item is not None}
    saved = [_with(row, done[row.id]) if row.id in done else row for row in rows]
    ctx.pass_rows_on(saved)
    return _summary(saved)


def _with(row: RowState, item: Item) -> RowState:
    _, content, error, usage = item
    return replace(row, generated_content=content, error=error, content_usage=usage)


def _summary(rows: list[RowState]) -> dict[str, Any]:
    opted_out = sum(1 for row in rows if row.error == suppressions.OPTED_OUT)
    failed = sum(1 for row in rows if row.generated_content is None and row.error) - opted_out
    generated = sum(1 for row in rows if row.generated_content is not None)
    summary: dict[str, Any] = {"generated": generated, "failed": failed}
    if opted_out:
        summary["opted_out"] = opted_out
    usages = [row.content_usage for row in rows if row.content_usage]
    if usages:
        summary["usage"] = {
            key: sum(u[key] for u in usages if isinstance(u.get(key), int))
            for key in ("prompt_tokens", "completion_tokens", "total_tokens")
        }
    return summary
