"""The step loop: claim the execution, run the next unsaved step, save, repeat.

Each step's result is saved (with `current_step` moved on) before the next step starts (the
step before an approval and the last step: in the statement that pauses or completes the run),
and steps save their rows themselves, so a run cut off anywhere resumes from the last saved
step. Within a job, a step may hand the rows it saved on to the next one (StepContext.rows),
which then need not read them again.
Only the worker holding the execution's lease writes; a heartbeat renews it while a step works,
and a lost lease stops the loop.

No job outgrows its timeout: past half of it, a step takes no new rows (worker.steps.context,
Unfinished) and no new step starts; the job gives the lease back and queues the rest as a new
job (a new run attempt, so a new job id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
from arq.connections import ArqRedis

from web.domain import approvals, clock, executions, queue
from web.domain.errors import is_unavailable
from web.domain.execution_rows import RowState
from web.domain.executions import Claim
from web.domain.statuses import ApprovalStatus, ExecutionStatus
from web.settings import Settings
from worker.providers.types import ProviderContext
from worker.steps import RUNNERS, preflight
from worker.steps.context import (
    LeaseLost,
    OutsideSendWindow,
    StepContext,
    StepError,
    Unfinished,
    keeping_lease,
)

logger = logging.getLogger("flowgate.engine")


# The share of the job timeout a job spends taking new rows and steps; the rest is the margin
# for the rows in flight and the saves.
CHUNK_SHARE = 0.5


@dataclass(frozen=True)
class RunOutcome:
    """What a run ended with: completed, pending_approval, failed, continued (in a new job),
    lease_lost, busy (another worker holds it: `retry_after` says when its lease would lapse),
    or nothing to do."""

    state: str
    retry_after: float | None = None


def _step_name(step: dict[str, Any], index: int) -> str:
    return str(step.get("name") or step.get("type") or f"step {index + 1}")


async def _queue_events(redis: ArqRedis, events: list[UUID] | None) -> None:
    """Hand recorded webhook events to the delivery jobs. They are already safe in PostgreSQL:
    if Redis refuses now, the reconciler queues them later."""
    for event_id in events or []:
        try:
            await queue.enqueue_webhook(redis, event_id)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            logger.warning("could not queue webhook event %s now; the reconciler will", event_id)


async def run_execution(
    execution_id: UUID, settings: Settings, http: httpx.AsyncClient, redis: ArqRedis
) -> RunOutcome:
    """Run the execution's remaining steps, if no other worker holds it. Raises what
    web.domain.errors.is_unavailable accepts (PostgreSQL or Redis is down), for the job to be
    tried again; any other error of a step fails the execution with a readable message."""
    deadline = time.monotonic() + settings.job_timeout_seconds * CHUNK_SHARE
    claim = await executions.claim(execution_id, uuid4(), settings.execution_lease_seconds)
    if claim is None:
        return await _not_claimed(execution_id)
    await _queue_events(redis, claim.events)
    run = _Run(claim, settings, http, redis, deadline)
    try:
        return await run.remaining_steps()
    except asyncio.CancelledError:
        # The worker is stopping (SIGTERM past its grace time) or the job timed out: give the
        # lease back so the re-queued job resumes at once, from the last saved step.
        await asyncio.shield(executions.release(claim))
        raise
    except LeaseLost:
        if await executions.status_of(execution_id) == ExecutionStatus.CANCELLED:
            return await run.wind_up_cancelled()  # cancelled between two heartbeats
        logger.warning("execution %s: lease lost at step %s, stopping", execution_id, run.index)
        return RunOutcome("lease_lost")
    except Exception as exc:
        if is_unavailable(exc):
            raise  # PostgreSQL or Redis went away: leave the run to a retry, from the saved step
        return await run.fail(exc)


async def _not_claimed(execution_id: UUID) -> RunOutcome:
    status = await executions.status_of(execution_id)
    if status in ("pending", "running"):
        return RunOutcome("busy", retry_after=await executions.lease_remaining(execution_id))
    return RunOutcome(f"nothing to do ({status or 'missing'})")


class _Run:
    """One worker's pass over an execution it holds the lease of, from `claim.current_step`."""

    def __init__(
        self,
        claim: Claim,
        settings: Settings,
        http: httpx.AsyncClient,
        redis: ArqRedis,
        deadline: float,
    ) -> None:
        self.claim = claim
        self.settings = settings
        self.http = http
        self.redis = redis
        self.deadline = deadline
        self.steps: list[dict[str, Any]] = claim.definition.get("steps", [])
        self.index = claim.current_step
        # Set by the heartbeat when the execution was cancelled under this worker: steps take
        # no new rows (StepContext.out_of_time), and the run winds up instead of going on.
        self.cancelled = False
        # The rows the last step handed on (StepContext.rows_before): saved, and no one else
        # writes an execution's rows while this worker holds its lease.
        self.rows_after: list[RowState] | None = None

    async def remaining_steps(self) -> RunOutcome:
        # Everything the steps left need, checked before any of them works (StepError).
        preflight.check(self.steps, self.index, ProviderContext(self.http, self.claim.id))
        while self.index < len(self.steps):
            # The first step of a job always runs (so every job makes progress); a later one
            # starts only while the job is within its share of the timeout.
            if self.cancelled:
                return await self.wind_up_cancelled()
            if self.index > self.claim.current_step and time.monotonic() >= self.deadline:
                return await self._hand_on()
            try:
                summary = await self._run_step(self.steps[self.index])
            except Unfinished:
                if self.cancelled:
                    return await self.wind_up_cancelled()
                return await self._hand_on()
            except OutsideSendWindow as outside:
                if self.cancelled:
                    return await self.wind_up_cancelled()
                return await self._wait_for_window(outside.resumes_at)
            if self.cancelled:
                return await self.wind_up_cancelled()
            if summary is None:
                return await self._pause_for_approval()
            if self.index == len(self.steps) - 1:
                return await self._complete(summary)  # the last step's result saved with it
            if self._waits_at(self.steps[self.index + 1]):
                return await self._pause_for_approval(summary)  # its result saved with it
            await self._save_step(summary)
            self.index += 1
        return await self._complete(None)  # every step was saved before this job

    async def _complete(self, last_summary: dict[str, Any] | None) -> RunOutcome:
        last_step = None if last_summary is None else (self.index, self._result(last_summary))
        events = await executions.complete(self.claim, last_step, self.rows_after)
        if events is None:
            raise LeaseLost
        await _queue_events(self.redis, events)
        logger.info("execution %s completed", self.claim.id)
        return RunOutcome("completed")

    async def _run_step(self, step: dict[str, Any]) -> dict[str, Any] | None:
        """The step's summary, or None at an approval step not approved yet."""
        rows_before, self.rows_after = self.rows_after, None
        kind = step.get("type")
        if kind == "approval":
            return None if self._waits_at(step) else {"decision": "approved"}
        runner = RUNNERS.get(kind) if isinstance(kind, str) else None
        if runner is None:
            raise StepError(f"unknown step type {kind!r}")
        # No lease renewal here: the claim or the last finish_step has just set the lease (and
        # seen the execution running); the heartbeat renews it while the step works.
        context = StepContext(
            execution_id=self.claim.id,
            index=self.index,
            name=_step_name(step, self.index),
            step_settings=step.get("settings", {}),
            process_settings=self.settings,
            http=self.http,
            renew_lease=self.renew_lease,
            deadline=self.deadline,
            stop_requested=lambda: self.cancelled,
            redis=self.redis,
            definition=self.claim.definition,
            rows_before=rows_before,
            pass_rows_on=self._pass_rows_on,
        )
        return await keeping_lease(context, runner(context))

    def _pass_rows_on(self, rows: list[RowState]) -> None:
        self.rows_after = rows

    async def renew_lease(self) -> None:
        status = await executions.renew_lease(self.claim, self.settings.execution_lease_seconds)
        if status is None:
            raise LeaseLost
        if status == ExecutionStatus.CANCELLED:
            self.cancelled = True

    async def wind_up_cancelled(self) -> RunOutcome:
        """The execution was cancelled under this worker: what it did is saved; the rows it did
        not get to end `cancelled`, the results are written again, the lease is given back."""
        await executions.finish_cancelled(self.claim)
        logger.info("execution %s: cancelled at step %s, stopped", self.claim.id, self.index + 1)
        return RunOutcome("cancelled")

    def _result(self, summary: dict[str, Any]) -> dict[str, Any]:
        """What execution.step_results keeps of the step at `index`, done with `summary`."""
        step = self.steps[self.index]
        return {
            "index": self.index,
            "name": _step_name(step, self.index),
            "type": step.get("type"),
            "outcome": "completed",
            "finishedAt": clock.iso(clock.now()),
            **summary,
        }

    async def _save_step(self, summary: dict[str, Any]) -> None:
        if not await executions.finish_step(
            self.claim, self.index, self._result(summary), self.settings.execution_lease_seconds
        ):
            raise LeaseLost

    async def _hand_on(self) -> RunOutcome:
        """Give the lease back and queue the rest of the run as a new job (a new attempt)."""
        handed = await executions.hand_on(self.claim)
        if handed is None:
            raise LeaseLost
        step, attempt = handed
        try:
            await queue.enqueue_run(self.redis, self.claim.id, step, attempt)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            logger.warning("execution %s: could not queue its next job; the reconciler will",
                           self.claim.id)  # fmt: skip
        logger.info("execution %s: step %s goes on in a new job", self.claim.id, step + 1)
        return RunOutcome("continued")

    async def _wait_for_window(self, resumes_at: datetime) -> RunOutcome:
        """Outside the send step's sending hours: give the lease back and queue the rest as a
        job deferred to `resumes_at` (no worker waits; the reconciler re-queues it, deferred
        again, should Redis lose it)."""
        handed = await executions.wait_for_window(self.claim, resumes_at)
        if handed is None:
            raise LeaseLost
        step, attempt = handed
        try:
            await queue.enqueue_run(
                self.redis, self.claim.id, step, attempt, defer_until=resumes_at
            )
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            logger.warning("execution %s: could not queue its deferred job; the reconciler will",
                           self.claim.id)  # fmt: skip
        logger.info("execution %s: outside its sending hours, resumes at %s", self.claim.id,
                    clock.iso(resumes_at))  # fmt: skip
        return RunOutcome("waiting")

    def _waits_at(self, step: dict[str, Any]) -> bool:
        """Whether `step` is an approval not given yet: the run pauses there."""
        return step.get("type") == "approval" and (
            self.claim.approval_status != ApprovalStatus.APPROVED
        )

    async def _pause_for_approval(self, summary_before: dict[str, Any] | None = None) -> RunOutcome:
        """Wait for approval at the step `index`, or at the next one with `summary_before` (the
        step just done, its result saved with the wait). Its webhook event, the approvers'
        notifications and the deadline and reminder jobs are queued after the commit (the
        reconciler enforces a deadline whose job was lost, and queues notifications that were
        not sent)."""
        step_before = None
        if summary_before is not None:
            step_before = (self.index, self._result(summary_before))
            self.index += 1
        smtp = self.settings.smtp_url is not None
        queued = await approvals.start_waiting(
            self.claim, self.index, smtp=smtp, step_before=step_before
        )
        if queued is None:
            raise LeaseLost
        try:
            await approvals.enqueue(self.redis, queued, self.claim.id)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            logger.warning("execution %s: could not queue what its wait needs; the reconciler "
                           "will", self.claim.id)  # fmt: skip
        logger.info("execution %s waits for approval", self.claim.id)
        return RunOutcome("pending_approval")

    async def fail(self, exc: Exception) -> RunOutcome:
        """End the execution `failed`, naming the step and what went wrong."""
        index = exc.index if isinstance(exc, StepError) and exc.index is not None else self.index
        name = _step_name(self.steps[index], index) if index < len(self.steps) else "completion"
        # An exception without a message (a bare TimeoutError) is named by its class instead.
        message = f"Step {index + 1} ({name}) failed: {str(exc) or type(exc).__name__}"
        logger.warning("execution %s failed: %s", self.claim.id, message)
        await _queue_events(self.redis, await executions.fail(self.claim, message))
        return RunOutcome("failed")
