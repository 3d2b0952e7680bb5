"""What a step runs with (StepContext), the two ways a step stops short (StepError, LeaseLost),
and keeping the lease while a step waits on outside services. Imports no step module, so every
step and the engine can import it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import httpx

from web.settings import Settings


class StepError(Exception):
    """A step cannot succeed on this input: the execution fails with this message. `index` names
    another step than the one running (the preflight's finding about a later step)."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class LeaseLost(Exception):
    """Another worker has taken over this execution: stop without writing anything more."""


@dataclass(frozen=True)
class StepContext:
    execution_id: UUID
    index: int
    name: str
    # The step's own `settings` from the workflow definition (web.domain.workflows).
    step_settings: dict[str, Any]
    # The settings of this worker process (FLOWGATE_*, web.settings).
    process_settings: Settings
    http: httpx.AsyncClient
    renew_lease: Callable[[], Awaitable[None]]


StepRunner = Callable[[StepContext], Awaitable[dict[str, Any]]]

T = TypeVar("T")


async def keeping_lease(ctx: StepContext, work: Coroutine[Any, Any, T]) -> T:
    """Run `work` while renewing the execution's lease every third of its length, for steps
    whose calls to outside services may outlast one lease. A lost lease (LeaseLost) cancels the
    work; whatever it had not saved yet is left for the worker that took over."""
    interval = max(ctx.process_settings.execution_lease_seconds / 3, 0.05)
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
