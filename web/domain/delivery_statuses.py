"""Delivery statuses of sent messages, as the WhatsApp Cloud API reports them later through its
webhooks: applying one to its row (never backwards), the counts per execution, what the results
show per row, and the throttled `execution.delivery_updated` webhook event.

Order: sent < delivered < read; `failed` is final and wins over sent and delivered, not over
read. It is one UPDATE whose WHERE holds the ordering, so two notifications for the same row at
once cannot undo each other: PostgreSQL re-checks the WHERE on the row's newest version after
the first one's commit. Imports only web.domain.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

from web.domain import executions, pool, queue, webhooks
from web.domain.script_client import ScriptClient
from web.domain.statuses import SendStatus
from web.domain.tables import Execution
from web.domain.types import ExecutionOutput, from_row

logger = logging.getLogger("flowgate.delivery")

ACCEPTED = "accepted"  # a sent row no status has arrived for yet
STATUSES = ("sent", "delivered", "read", "failed")
COUNT_NAMES = (ACCEPTED, *STATUSES)
# The providers that report delivery statuses back; only their rows carry deliveryStatus.
TRACKED_PROVIDERS = frozenset({"whatsapp_cloud"})

_APPLY = """
UPDATE execution_row SET delivery_status = $2,
  delivery_error = CASE WHEN $2 = 'failed' THEN $3 ELSE NULL END,
  delivery_updated_at = now()
WHERE message_id = $1 AND send_status = 'sent'
  AND COALESCE(delivery_status, '') NOT IN ('failed', 'read')
  AND ($2 = 'failed'
       OR CASE $2 WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3 ELSE 0 END
          > CASE delivery_status WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 ELSE 0 END)
RETURNING execution
"""


@dataclass(frozen=True)
class Applied:
    """What one status did: `execution` of the row it changed, or `known` False for a message
    id no row has (acknowledged and logged)."""

    known: bool
    execution: UUID | None = None


async def apply_status(message_id: str, status: str, error: str | None) -> Applied:
    """Move the row sent as `message_id` to `status` if that is forward (see the module)."""
    rows = await pool.fetch_rows(_APPLY, message_id, status, error)
    if rows:
        return Applied(True, rows[0]["execution"])
    known = await pool.fetch_row(
        "SELECT 1 FROM execution_row WHERE message_id = $1 LIMIT 1", message_id
    )
    return Applied(known is not None)


def error_text(errors: Any) -> str | None:
    """`131026: Message undeliverable` from a status's `errors[0]` {code, title}."""
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None
    code, title = errors[0].get("code"), errors[0].get("title") or errors[0].get("message")
    if code is None and not title:
        return None
    if code is not None and title:
        return f"{code}: {title}"
    return str(title or code)


def tracked(definition: dict[str, Any] | None) -> bool:
    """Whether the execution sends through a provider that reports delivery statuses."""
    for step in (definition or {}).get("steps", []):
        if step.get("type") == "send_message":
            return (step.get("settings") or {}).get("provider") in TRACKED_PROVIDERS
    return False


_ROWS = (
    "SELECT position, send_status, delivery_status, delivery_error "
    "FROM execution_row WHERE execution = $1 ORDER BY position"
)


def _row_status(row: dict[str, Any]) -> str | None:
    if row["send_status"] != SendStatus.SENT:
        return None
    return str(row["delivery_status"] or ACCEPTED)


async def counts(execution_id: UUID) -> dict[str, int]:
    """Sent rows by their latest delivery status: accepted, sent, delivered, read, failed."""
    tally = dict.fromkeys(COUNT_NAMES, 0)
    for row in await pool.fetch_rows(_ROWS, execution_id):
        status = _row_status(row)
        if status is not None:
            tally[status] += 1
    return tally


async def with_delivery(execution_id: UUID, output: ExecutionOutput) -> ExecutionOutput:
    """The stored results with each sent row's `deliveryStatus` (and `deliveryError` when it
    failed) and `deliveryCounts` beside the spec's fields, as they are now."""
    rows = await pool.fetch_rows(_ROWS, execution_id)
    results = [dict(item) for item in output.get("results", [])]
    tally = dict.fromkeys(COUNT_NAMES, 0)
    for item, row in zip(results, rows, strict=False):
        status = _row_status(row)
        if status is None:
            continue
        tally[status] += 1
        item["deliveryStatus"] = status
        if status == "failed" and row["delivery_error"]:
            item["deliveryError"] = row["delivery_error"]
    return {**output, "results": results, "deliveryCounts": tally}


# --- execution.delivery_updated -------------------------------------------------------------

_NOTIFY = (
    "UPDATE execution AS e "
    "SET delivery_notified_counts = {}::jsonb, delivery_notified_at = now() "
    "WHERE e.id = {} AND e.delivery_notified_counts IS DISTINCT FROM {}::jsonb "
    "  AND (e.delivery_notified_at IS NULL "
    "       OR e.delivery_notified_at <= now() - make_interval(secs => {})) "
    "RETURNING " + executions.EVENT_COLUMNS
)
_WAIT = (
    "SELECT EXTRACT(EPOCH FROM e.delivery_notified_at + make_interval(secs => {}) - now()) "
    "  AS wait, floor(EXTRACT(EPOCH FROM e.delivery_notified_at)) AS slot "
    "FROM execution e JOIN api_key k ON k.id = e.api_key "
    "WHERE e.id = {} AND e.delivery_notified_counts IS DISTINCT FROM {}::jsonb "
    "  AND k.webhook_url IS NOT NULL AND {} = ANY(k.webhook_events)"
)


async def notify_counts(
    redis: ScriptClient | Redis, execution_id: UUID, interval_seconds: float
) -> bool:
    """Record `execution.delivery_updated` with the current counts if they changed since the
    last one and that was at least `interval_seconds` ago (a guarded UPDATE of the execution
    row: holds across processes). Changed but too soon: a job to look again when the interval
    is up. True if an event was recorded."""
    current = await counts(execution_id)
    encoded = json.dumps(current, sort_keys=True)
    events: list[UUID] = []
    recorded = False
    async with pool.engine().transaction():
        rows = await Execution.raw(_NOTIFY, encoded, execution_id, encoded, interval_seconds)
        if rows:
            new = await webhooks.record_event(
                webhooks.DELIVERY_UPDATED,
                from_row({**rows[0], "delivery": current}, webhooks.EventSource),
            )
            recorded = new is not None
            events = [new.id] if new is not None and new.queue_now else []
    for event_id in events:
        await queue.enqueue_webhook(redis, event_id)
    if not rows:
        waiting = await Execution.raw(
            _WAIT, interval_seconds, execution_id, encoded, webhooks.DELIVERY_UPDATED
        )
        if waiting and waiting[0]["wait"] is not None:
            await queue.enqueue_delivery_check(
                redis, execution_id, int(waiting[0]["slot"]), max(float(waiting[0]["wait"]), 0.0)
            )
    return recorded
