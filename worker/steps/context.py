"""What a step runs with (StepContext), the ways a step stops short (StepError, LeaseLost,
Unfinished), and keeping the lease while a step works (the engine's heartbeat). Imports no step
module, so every step and the engine can import it."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import httpx
from redis.asyncio import Redis

from web.domain import execution_rows
from web.domain.execution_rows import RowState
from web.domain.types import Definition
from web.settings import Settings
from worker.providers.types import ProviderLimits


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


class OutsideSendWindow(Exception):
    """A send step is outside its sending hours (sendWindow) with all it did saved: the run
    waits, `running`, for a job deferred to `resumes_at` (web.domain.send_window)."""

    def __init__(self, resumes_at: datetime) -> None:
        super().__init__(f"sending resumes at {resumes_at.isoformat()}")
        self.resumes_at = resumes_at


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
    # The worker's Redis (arq's pool): provider limits shared by every worker live there.
    redis: Redis | None = None
    # The whole workflow as stored with the execution (what a step needs of the others).
    definition: Definition = field(default_factory=dict)
    # The execution's rows as the step just before this one, in this same job, saved them and
    # handed them on (`pass_rows_on`); None: `rows()` reads them. Only the step right before
    # counts: the engine clears them before every step, so a step that saves rows without
    # handing them on leaves the next one to read what it saved.
    rows_before: list[RowState] | None = None
    pass_rows_on: Callable[[list[RowState]], None] = lambda rows: None

    async def rows(self) -> list[RowState]:
        """The execution's rows as saved, in input order: those handed on, else read."""
        if self.rows_before is not None:
            return self.rows_before
        return await execution_rows.load(self.execution_id)

    def out_of_time(self) -> bool:
        return time.monotonic() >= self.deadline or self.stop_requested()

    def provider_limits(self) -> ProviderLimits | None:
        """What the step's providers share their account limits through (worker.providers.
        throttle); None when switched off (FLOWGATE_PROVIDER_LIMITS_ENABLED=false) or without
        Redis."""
        if self.redis is None or not self.process_settings.provider_limits_enabled:
            return None
        return ProviderLimits(self.redis, self.deadline)


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
