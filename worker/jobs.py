"""Thin arq entry points. Jobs take ids, call the engine and return a small dict; a job may run
twice, which the engine's lease and saved steps make harmless."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

from arq import Retry

from web.domain import idempotency, queue, recovery, retention
from web.domain.errors import is_unavailable
from web.settings import get_settings
from worker import delivery, engine

logger = logging.getLogger("flowgate.jobs")

TRANSIENT_RETRY_DELAYS = (1, 2, 5, 10, 20, 30, 60, 60, 60)


def _retry_later(ctx: dict[str, Any]) -> Retry:
    """PostgreSQL or Redis is unreachable: try the job again later, backing off. Only then: any
    other error ends the job (the engine has already failed the execution for a step's own)."""
    delays = TRANSIENT_RETRY_DELAYS
    return Retry(defer=delays[min(ctx["job_try"], len(delays)) - 1])


async def run_execution(ctx: dict[str, Any], execution_id: str) -> dict[str, Any]:
    try:
        outcome = await engine.run_execution(
            UUID(execution_id), ctx["settings"], ctx["http"], ctx["redis"]
        )
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        raise _retry_later(ctx) from exc
    if outcome.retry_after is not None:
        # Another worker holds the lease: look again once it would have lapsed (arq's max_tries
        # bounds this; a holder that dies later is also replaced by the reconciler).
        raise Retry(defer=outcome.retry_after + 0.1)
    return {"execution_id": execution_id, "outcome": outcome.state}


async def deliver_webhook(ctx: dict[str, Any], event_id: str) -> dict[str, Any]:
    try:
        outcome = await delivery.deliver(ctx["http"], UUID(event_id), ctx["settings"])
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        raise _retry_later(ctx) from exc
    if outcome.retry_in is not None:
        raise Retry(defer=outcome.retry_in)
    if outcome.next_event is not None:
        await queue.enqueue_webhook(ctx["redis"], outcome.next_event)
    return {"event_id": event_id, "outcome": outcome.state}


async def reconcile(ctx: dict[str, Any]) -> dict[str, Any]:
    """One reconciler pass (worker/reconciler.py runs it every few seconds): queue again what
    nothing is doing, and say what was really queued."""
    requeued = await recovery.requeue_stalled(ctx["redis"], ctx["settings"].stalled_after_seconds)
    if requeued.executions or requeued.webhook_events:
        logger.warning(
            "reconciler queued %d execution(s) and %d webhook event(s) again: %s",
            len(requeued.executions),
            len(requeued.webhook_events),
            ", ".join(str(e) for e in [*requeued.executions, *requeued.webhook_events][:20]),
        )
    return {
        "executions": len(requeued.executions),
        "webhook_events": len(requeued.webhook_events),
    }


async def purge_idempotency_answers(ctx: dict[str, Any]) -> dict[str, Any]:
    """Hourly: forget the answers to Idempotency-Key requests whose time is up."""
    removed = await idempotency.purge_expired()
    if removed:
        logger.info("purged %d expired idempotency answer(s)", removed)
    return {"removed": removed}


async def purge_personal_data(ctx: dict[str, Any]) -> dict[str, Any]:
    """Daily: the personal data of executions that ended FLOWGATE_RETENTION_DAYS ago (counts
    only in the log, never what was removed)."""
    days = (ctx.get("settings") or get_settings()).retention_days
    report = await retention.purge_personal_data(retention.cutoff_for(timedelta(days=days)))
    if report.counts["executions"]:
        logger.info(
            "purged the personal data of executions that ended over %d day(s) ago: %s",
            days,
            ", ".join(f"{kind} {count}" for kind, count in report.counts.items()),
        )
    return {**report.counts, "batches": report.batches}
