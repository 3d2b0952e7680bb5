"""Finding work that PostgreSQL says is unfinished but nothing is doing, and queueing it again.

Redis is a transport that may lose everything (a restart without persistence, a flush) and a
worker may die at any moment; the database is the source of truth. Every worker calls
`requeue_stalled` every few seconds (worker/reconciler.py), safely all at once:

- An execution `pending` or `running` whose lease has lapsed (its worker stopped renewing it:
  killed, frozen or cut off) is queued again at once, unless its job is waiting in Redis.
- One with no lease (just queued, resumed after approval, handed on to the next job between
  chunks) is queued again once it has not moved for `stalled_after` seconds and its job is not
  waiting in Redis: lost with Redis, or taken by a worker that died before claiming the run.

"Waiting" means the job the run's current step and attempt name exists and no worker has
started it. Queueing again counts one more run attempt, in one guarded UPDATE: of several
reconcilers looking at once exactly one wins each row, and its job id is one arq has never seen
(web.domain.queue), which a dead worker's job cannot hold back. Only the lease decides who
runs an execution, so a job queued needlessly finds it held or done and ends.

An execution waiting for its send step's sending hours (`send_resumes_at`, web.domain.send_window)
has no lease and its job is deferred, waiting in Redis until then: it is not lost work. Should
the job vanish (Redis flushed or restarted), it is queued again deferred to the same time, so
it still waits, with no worker busy.

Webhook events still `pending` that have not been attempted for `stalled_after` seconds are
queued again under their own deterministic id (a no-op while that job is queued or running),
and so are reviewer notifications. An execution whose approval deadline has passed is timed out
here too, and one whose reminder is due (`remindBefore` its deadline, not passed yet) reminded
(web.domain.approvals.enforce_due, one indexed query): the backstop of their deferred jobs, so
a deadline or a reminder whose moment passed while every worker was down is dealt with by the
first pass of the next one.
WhatsApp notifications stored but not processed for `stalled_after` seconds (their job lost
with Redis) are queued again too; processing one twice is harmless (web.domain.whatsapp_inbound).
Imports only web.domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix

from web.domain import approvals, notifications, queue, whatsapp_inbound
from web.domain.tables import Execution, WebhookEvent

# The reconciler's one query, served by the partial index execution_unfinished (created_at
# WHERE status IN ('pending', 'running')): finished runs are not even read, nor sorted.
_STALLED_EXECUTIONS = (
    "SELECT id, current_step, run_attempt "
    "FROM execution "
    "WHERE status IN ('pending', 'running') "
    "  AND (lease_expires_at < now() "
    "       OR (lease_expires_at IS NULL "
    "           AND updated_at < now() - make_interval(secs => {}))) "
    "ORDER BY created_at LIMIT 1000"
)

# One more attempt for each (id, attempt) still stalled and still at that attempt: a row another
# reconciler (or a claiming worker) has moved on since it was read is left alone.
_COUNT_ATTEMPT = (
    "UPDATE execution AS e SET run_attempt = e.run_attempt + 1, updated_at = now() "
    "FROM unnest({}::uuid[], {}::int[]) AS v(id, attempt) "
    "WHERE e.id = v.id AND e.run_attempt = v.attempt "
    "  AND e.status IN ('pending', 'running') "
    "  AND (e.lease_expires_at IS NULL OR e.lease_expires_at < now()) "
    "RETURNING e.id, e.current_step, e.run_attempt, e.send_resumes_at"
)


@dataclass(frozen=True)
class Requeued:
    """What one pass really queued (not what it looked at)."""

    executions: list[UUID]
    webhook_events: list[UUID]
    # Executions whose approval deadline had passed, ended now (the deadline job's backstop),
    # reviewer notifications not sent yet, and stored WhatsApp notifications, queued again;
    # executions whose reminder was due and not sent, reminded now (the reminder job's backstop).
    timed_out: list[UUID] = field(default_factory=list)
    notifications: list[UUID] = field(default_factory=list)
    whatsapp_notifications: list[UUID] = field(default_factory=list)
    reminded: list[UUID] = field(default_factory=list)


@dataclass(frozen=True)
class StalledExecution:
    id: UUID
    step: int
    attempt: int

    @property
    def job_id(self) -> str:
        return queue.run_job_id(self.id, self.step, self.attempt)


async def stalled_executions(stalled_after: float) -> list[StalledExecution]:
    rows = await Execution.raw(_STALLED_EXECUTIONS, stalled_after)
    return [StalledExecution(row["id"], row["current_step"], row["run_attempt"]) for row in rows]


async def _waiting(redis: ArqRedis, stalled: list[StalledExecution]) -> list[bool]:
    """For each: is its job queued in Redis and not started by any worker?"""
    if not stalled:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for execution in stalled:
            pipe.exists(job_key_prefix + execution.job_id)
            pipe.exists(in_progress_key_prefix + execution.job_id)
        found = await pipe.execute()
    return [bool(found[2 * i]) and not found[2 * i + 1] for i in range(len(stalled))]


async def _count_attempt(
    stalled: list[StalledExecution],
) -> list[tuple[UUID, int, int, datetime | None]]:
    if not stalled:
        return []
    rows = await Execution.raw(
        _COUNT_ATTEMPT, [e.id for e in stalled], [e.attempt for e in stalled]
    )
    return [
        (row["id"], row["current_step"], row["run_attempt"], row["send_resumes_at"]) for row in rows
    ]


async def stalled_webhook_events(stalled_after: float) -> list[UUID]:
    """The first pending event of each execution (later ones wait for it) that has not been
    attempted for `stalled_after` seconds."""
    rows = await WebhookEvent.raw(
        "SELECT id FROM ("
        "  SELECT DISTINCT ON (e.execution) e.id, COALESCE("
        "    (SELECT MAX(a.created_at) FROM webhook_attempt a WHERE a.event = e.id), "
        "    e.created_at) AS last_moved "
        "  FROM webhook_event e WHERE e.status = 'pending' ORDER BY e.execution, e.sequence"
        ") AS first_pending WHERE last_moved < now() - make_interval(secs => {})",
        stalled_after,
    )
    return [row["id"] for row in rows]


async def requeue_stalled(redis: ArqRedis, stalled_after: float, *, smtp: bool = False) -> Requeued:
    """One pass: queue again what nothing is doing. Safe to run in any number of processes at
    once; returns what this pass queued."""
    stalled = await stalled_executions(stalled_after)
    waiting = await _waiting(redis, stalled)
    again = await _count_attempt([e for e, w in zip(stalled, waiting, strict=True) if not w])
    executions = [
        execution_id
        for execution_id, step, attempt, resumes_at in again
        if await queue.enqueue_run(redis, execution_id, step, attempt, defer_until=resumes_at)
    ]
    events = [
        event_id
        for event_id in await stalled_webhook_events(stalled_after)
        if await queue.enqueue_webhook(redis, event_id)
    ]
    due = await approvals.enforce_due(redis, smtp=smtp)
    notes = [
        notification_id
        for notification_id in await notifications.stalled(stalled_after)
        if await queue.enqueue_notification(redis, notification_id)
    ]
    inbound = [
        notification_id
        for notification_id in await whatsapp_inbound.unprocessed(stalled_after)
        if await queue.enqueue_whatsapp_notification(redis, notification_id)
    ]
    return Requeued(executions, events, due.timed_out, notes, inbound, due.reminded)
