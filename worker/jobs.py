"""Thin arq entry points. Jobs take ids, call the engine and return a small dict; a job may run
twice, which the engine's lease and saved steps make harmless."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

from arq import Retry

from web.domain import (
    approvals,
    audit,
    delivery_statuses,
    idempotency,
    queue,
    recovery,
    retention,
    whatsapp_inbound,
)
from web.domain.errors import is_unavailable
from web.settings import get_settings
from worker import delivery, engine, notify
from worker.metrics import observed_job

logger = logging.getLogger("flowgate.jobs")

TRANSIENT_RETRY_DELAYS = (1, 2, 5, 10, 20, 30, 60, 60, 60)


def _retry_later(ctx: dict[str, Any]) -> Retry:
    """PostgreSQL or Redis is unreachable: try the job again later, backing off. Only then: any
    other error ends the job (the engine has already failed the execution for a step's own)."""
    delays = TRANSIENT_RETRY_DELAYS
    return Retry(defer=delays[min(ctx["job_try"], len(delays)) - 1])


@observed_job
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


@observed_job
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


@observed_job
async def process_whatsapp_notification(
    ctx: dict[str, Any], notification_id: str
) -> dict[str, Any]:
    """One stored WhatsApp notification: its statuses and opt-outs (web.domain.whatsapp_inbound)."""
    settings = ctx["settings"]
    try:
        done = await whatsapp_inbound.process(
            ctx["redis"],
            UUID(notification_id),
            settings.opt_out_keywords,
            settings.opt_in_keywords,
            settings.delivery_webhook_interval_seconds,
        )
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        raise _retry_later(ctx) from exc
    if done is None:
        return {"notification_id": notification_id, "outcome": "nothing to do"}
    return {
        "notification_id": notification_id,
        "statuses": done.statuses,
        "unknown": done.unknown,
        "opted_out": done.opted_out,
        "opted_in": done.opted_in,
    }


@observed_job
async def notify_delivery_counts(ctx: dict[str, Any], execution_id: str) -> dict[str, Any]:
    """A throttled execution.delivery_updated, once its interval is up."""
    try:
        recorded = await delivery_statuses.notify_counts(
            ctx["redis"], UUID(execution_id), ctx["settings"].delivery_webhook_interval_seconds
        )
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        raise _retry_later(ctx) from exc
    return {"execution_id": execution_id, "recorded": recorded}


@observed_job
async def reconcile(ctx: dict[str, Any]) -> dict[str, Any]:
    """One reconciler pass (worker/reconciler.py runs it every few seconds): queue again what
    nothing is doing, and say what was really queued."""
    settings = ctx["settings"]
    requeued = await recovery.requeue_stalled(
        ctx["redis"], settings.stalled_after_seconds, smtp=settings.smtp_url is not None
    )
    if requeued.timed_out:
        logger.warning(
            "reconciler timed out %d execution(s) past their approval deadline: %s",
            len(requeued.timed_out),
            ", ".join(str(e) for e in requeued.timed_out[:20]),
        )
    if requeued.reminded:
        logger.warning(
            "reconciler reminded the approvers of %d execution(s) whose reminder was due: %s",
            len(requeued.reminded),
            ", ".join(str(e) for e in requeued.reminded[:20]),
        )
    if requeued.whatsapp_notifications:
        logger.warning(
            "reconciler queued %d WhatsApp notification(s) again",
            len(requeued.whatsapp_notifications),
        )
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


@observed_job
async def purge_idempotency_answers(ctx: dict[str, Any]) -> dict[str, Any]:
    """Hourly: forget the answers to Idempotency-Key requests whose time is up."""
    removed = await idempotency.purge_expired()
    if removed:
        logger.info("purged %d expired idempotency answer(s)", removed)
    return {"removed": removed}


@observed_job
async def send_notification(ctx: dict[str, Any], notification_id: str) -> dict[str, Any]:
    """One attempt at a reviewer notification (worker/notify.py), retried as it says."""
    try:
        outcome = await notify.send(ctx["http"], UUID(notification_id), ctx["settings"])
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        raise _retry_later(ctx) from exc
    if outcome.retry_in is not None:
        raise Retry(defer=outcome.retry_in)
    return {"notification_id": notification_id, "outcome": outcome.state}


@observed_job
async def approval_deadline(ctx: dict[str, Any], execution_id: str) -> dict[str, Any]:
    """At an execution's approval deadline: time it out unless it was decided (one
    transaction with the row lock an approval takes: exactly one of them wins)."""
    uid = UUID(execution_id)
    try:
        queued = await approvals.time_out(uid, smtp=ctx["settings"].smtp_url is not None)
        if isinstance(queued, approvals.Queued):
            await approvals.enqueue(ctx["redis"], queued, uid)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        raise _retry_later(ctx) from exc
    if isinstance(queued, float):
        raise Retry(defer=queued + 0.05)  # the job came early (clocks): look again at the deadline
    if queued is not None:
        logger.info("execution %s: approval timed out, cancelled", execution_id)
    return {"execution_id": execution_id, "timed_out": queued is not None}


@observed_job
async def approval_reminder(ctx: dict[str, Any], execution_id: str) -> dict[str, Any]:
    """`remindBefore` the deadline: tell the approvers again if it still waits and nothing
    reminded them yet (the reconciler's backstop may have; a second run does nothing)."""
    uid = UUID(execution_id)
    try:
        queued = await approvals.remind(uid, smtp=ctx["settings"].smtp_url is not None)
        if queued is not None:
            await approvals.enqueue(ctx["redis"], queued, uid)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        raise _retry_later(ctx) from exc
    if queued is not None:
        logger.info("execution %s: approvers reminded", execution_id)
    return {"execution_id": execution_id, "reminded": queued is not None}


@observed_job
async def purge_whatsapp_notifications(ctx: dict[str, Any]) -> dict[str, Any]:
    """Hourly: forget WhatsApp notifications processed a week ago."""
    removed = await whatsapp_inbound.purge_processed()
    if removed:
        logger.info("purged %d processed WhatsApp notification(s)", removed)
    return {"removed": removed}


@observed_job
async def purge_audit_entries(ctx: dict[str, Any]) -> dict[str, Any]:
    """Daily: audit entries older than FLOWGATE_AUDIT_RETENTION_DAYS, each batch with its
    checkpoint (web.domain.audit.purge_expired), so `flowgate audit verify` still passes."""
    purged = await audit.purge_expired(ctx["settings"].audit_retention_days)
    if purged.deleted:
        logger.info(
            "purged %d audit entr%s up to entry %s",
            purged.deleted,
            "y" if purged.deleted == 1 else "ies",
            purged.checkpoint_id,
        )
    return {"deleted": purged.deleted, "checkpoint": purged.checkpoint_id}


@observed_job
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
