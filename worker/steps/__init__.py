"""Step types of the engine: one module each, all with the same signature,
`async def run(ctx: StepContext) -> dict` returning a small JSON summary of what it did."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import httpx

from web.settings import Settings


class StepError(Exception):
    """A step cannot succeed on this input: the execution fails with this message."""


class LeaseLost(Exception):
    """Another worker has taken over this execution: stop without writing anything more."""


@dataclass(frozen=True)
class StepContext:
    execution_id: UUID
    index: int
    name: str
    settings: dict[str, Any]
    app: Settings
    http: httpx.AsyncClient
    renew_lease: Callable[[], Awaitable[None]]


StepRunner = Callable[[StepContext], Awaitable[dict[str, Any]]]

T = TypeVar("T")


async def run_all(coroutines: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Like asyncio.gather, but the first error cancels the others before it is re-raised, so
    no row's work goes on behind a failed step."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    if not tasks:
        return []
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        raise


async def keeping_lease(ctx: StepContext, work: Coroutine[Any, Any, T]) -> T:
    """Run `work` while renewing the execution's lease every third of its length, for steps
    whose calls to outside services may outlast one lease. A lost lease (LeaseLost) cancels the
    work; whatever it had not saved yet is left for the worker that took over."""
    interval = max(ctx.app.execution_lease_seconds / 3, 0.05)
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval)
            if done:
                return task.result()
            await ctx.renew_lease()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})


def runners() -> dict[str, StepRunner]:
    from worker.steps import compliance_check, generate_content, send_message

    return {
        "generate_content": generate_content.run,
        "compliance_check": compliance_check.run,
        "send_message": send_message.run,
    }
