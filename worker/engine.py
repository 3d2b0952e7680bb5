"""The step loop: claim the execution, run the next unsaved step, save, repeat.

Each step's result is saved (with `current_step` moved on) before the next step starts, and
steps save their rows themselves, so a run cut off anywhere resumes from the last saved step.
Only the worker holding the execution's lease writes; a lost lease stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import httpx
from arq.connections import ArqRedis

from web.domain import clock, executions, queue
from web.domain.errors import UNAVAILABLE_ERRORS
from web.domain.statuses import ApprovalStatus
from web.settings import Settings
from worker.steps import LeaseLost, StepContext, StepError, runners

logger = logging.getLogger("flowgate.engine")


@dataclass(frozen=True)
class Outcome:
    """What a run ended with. `retry_after` is set when another worker holds the lease."""

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
        except UNAVAILABLE_ERRORS:
            logger.warning("could not queue webhook event %s now; the reconciler will", event_id)


async def run_execution(
    execution_id: UUID, settings: Settings, http: httpx.AsyncClient, redis: ArqRedis
) -> Outcome:
    lease = settings.execution_lease_seconds
    claim = await executions.claim(execution_id, uuid4(), lease)
    if claim is None:
        status = await executions.status_of(execution_id)
        if status in ("pending", "running"):
            return Outcome("busy", retry_after=await executions.lease_remaining(execution_id))
        return Outcome(f"nothing to do ({status or 'missing'})")
    await _queue_events(redis, claim.events)

    async def renew() -> None:
        if not await executions.renew_lease(claim, lease):
            raise LeaseLost

    steps: list[dict[str, Any]] = claim.definition.get("steps", [])
    step_runners = runners()
    index = claim.current_step
    try:
        while index < len(steps):
            step = steps[index]
            name = _step_name(step, index)
            kind = step.get("type")
            summary: dict[str, Any]
            if kind == "approval":
                if claim.approval_status != ApprovalStatus.APPROVED:
                    await _queue_events(redis, await executions.pause_for_approval(claim, index))
                    logger.info("execution %s waits for approval", execution_id)
                    return Outcome("pending_approval")
                summary = {"decision": "approved"}
            elif kind in step_runners:
                await renew()
                context = StepContext(
                    execution_id=execution_id,
                    index=index,
                    name=name,
                    settings=step.get("settings", {}),
                    app=settings,
                    http=http,
                    renew_lease=renew,
                )
                summary = await step_runners[kind](context)
            else:
                raise StepError(f"unknown step type {kind!r}")
            result = {
                "index": index,
                "name": name,
                "type": kind,
                "outcome": "completed",
                "finishedAt": clock.iso(clock.now()),
                **summary,
            }
            if not await executions.finish_step(claim, index, result, lease):
                raise LeaseLost
            index += 1
        await _queue_events(redis, await executions.complete(claim))
        logger.info("execution %s completed", execution_id)
        return Outcome("completed")
    except asyncio.CancelledError:
        # The worker is stopping (SIGTERM past its grace time) or the job timed out: give the
        # lease back so the re-queued job resumes at once, from the last saved step.
        await asyncio.shield(executions.release(claim))
        raise
    except LeaseLost:
        logger.warning("execution %s: lease lost at step %s, stopping", execution_id, index)
        return Outcome("lease_lost")
    except UNAVAILABLE_ERRORS:
        # PostgreSQL or Redis went away: leave the run to a retry, from the last saved step.
        raise
    except Exception as exc:
        name = _step_name(steps[index], index) if index < len(steps) else "completion"
        message = f"Step {index + 1} ({name}) failed: {exc}"
        logger.warning("execution %s failed: %s", execution_id, message)
        await _queue_events(redis, await executions.fail(claim, message))
        return Outcome("failed")
