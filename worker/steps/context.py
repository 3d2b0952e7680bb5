"""What a step runs with (StepContext), the ways a step stops short (StepError, LeaseLost,
Unfinished), and keeping the lease while a step works (the engine's heartbeat). Imports no step
module, so every step and the engine can import it."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
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


class Unfinished(Exception):
    """The step stopped taking rows at its job's deadline (StepContext.out_of_time) with all it
    did saved: a new job runs the step again for the rows left, so no job outgrows its timeout."""


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
    # time.monotonic() after which the step takes no new rows: it finishes those in flight,
    # saves them and raises Unfinished (half the job timeout after the job started).
    deadline: float = math.inf
    # True once the execution was cancelled under this worker (seen by the heartbeat): like the
    # deadline, the step takes no new rows and saves those in flight.
    stop_requested: Callable[[], bool] = lambda: False

    def out_of_time(self) -> bool:
        return time.monotonic() >= self.deadline or self.stop_requested()


StepRunner = Callable[[StepContext], Awaitable[dict[str, Any]]]

T = TypeVar("T")


async def keeping_lease(ctx: StepContext, work: Awaitable[T]) -> T:
    """Run `work` (a whole step: the engine runs every step so) while a heartbeat renews the
    execution's lease every quarter of its length, so a short lease never lapses under a live
    worker however long a call takes. A lost lease (LeaseLost) cancels the work; whatever it had
    not saved yet is left for the worker that took over."""
    interval = max(ctx.process_settings.execution_lease_seconds / 4, 0.05)
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
