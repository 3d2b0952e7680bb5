"""Finding work that PostgreSQL says is unfinished but nothing is doing, and queueing it again.

Redis is a transport that may lose everything (a restart without persistence, a flush); the
database is the source of truth. An execution `pending` or `running` with no live lease, or a
webhook event still `pending`, that has not moved for `stalled_after` seconds is queued again.
Job ids are deterministic (web.domain.queue), so queueing work that is in fact still queued or
running is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from arq.connections import ArqRedis

from web.domain import queue
from web.domain.tables import Execution, WebhookEvent


@dataclass(frozen=True)
class Requeued:
    executions: list[UUID]
    webhook_events: list[UUID]


async def stalled_executions(stalled_after: float) -> list[tuple[UUID, int]]:
    rows = await Execution.raw(
        "SELECT id, current_step FROM execution "
        "WHERE status IN ('pending', 'running') "
        "  AND updated_at < now() - make_interval(secs => {}) "
        "  AND (lease_expires_at IS NULL OR lease_expires_at < now()) "
        "ORDER BY created_at LIMIT 1000",
        stalled_after,
    )
    return [(row["id"], row["current_step"]) for row in rows]


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


async def requeue_stalled(redis: ArqRedis, stalled_after: float) -> Requeued:
    executions = await stalled_executions(stalled_after)
    for execution_id, step in executions:
        await queue.enqueue_run(redis, execution_id, step)
    events = await stalled_webhook_events(stalled_after)
    for event_id in events:
        await queue.enqueue_webhook(redis, event_id)
    return Requeued([e for e, _ in executions], events)
