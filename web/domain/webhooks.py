"""Webhook events: URL rules, payloads and signatures (building, not sending), the outbox of
events written with each status change, and the delivery log.

Sending lives in worker/delivery.py. Imports only web.domain, Piccolo and the standard library.

Ordering: the events of one execution are delivered one after the other. An event is queued
at once only when no earlier event of its execution is still pending; finishing an event
(delivered, or given up) queues the next pending one. Both happen with the execution's row
locked, so no event is ever left behind.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar
from urllib.parse import urlsplit
from uuid import UUID

from redis.asyncio import Redis

from web.domain import addresses, audit, clock, pool, queue
from web.domain.actors import Actor
from web.domain.errors import Conflict, InvalidInput, NotFound
from web.domain.script_client import ScriptClient
from web.domain.tables import Execution, WebhookAttempt, WebhookEvent
from web.domain.types import ExecutionOutput, ReadModel, from_row

USER_AGENT = "Workflow-Automation-Platform/1.0"  # public-api.md "Webhook Headers"
STARTED = "execution.started"
COMPLETED = "execution.completed"
FAILED = "execution.failed"
PENDING_APPROVAL = "execution.pending_approval"
# Added beside the contract: a run that ended without completing (rejected, cancelled). Keys
# created from now on subscribe to it by default; existing keys keep the list they have.
CANCELLED = "execution.cancelled"
# Added beside the contract (issue 16): the delivery counts of an execution's WhatsApp messages
# changed (at most once a minute per execution, web.domain.delivery_statuses). Not in the
# default set: a key subscribes to it explicitly.
DELIVERY_UPDATED = "execution.delivery_updated"
DEFAULT_EVENTS = (STARTED, COMPLETED, FAILED, PENDING_APPROVAL, CANCELLED)
EVENTS = (*DEFAULT_EVENTS, DELIVERY_UPDATED)
RESPONSE_BODY_LIMIT = 1024


# --- URLs -------------------------------------------------------------------------------


def check_url(url: str, *, allow_http: bool, allow_private: bool) -> str:
    """InvalidInput unless `url` may receive webhooks (web.domain.addresses: IP literals in any
    spelling, IPv6 forms of IPv4 addresses, `localhost`). A host given as a name is checked
    again at every connection, against what it resolves to then (worker/outbound.py)."""
    parts = urlsplit(url.strip())
    try:
        host = parts.hostname
        parts.port  # noqa: B018 - a port that is not a number raises ValueError here
    except ValueError:
        host = None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidInput("Webhook URL must be an http:// or https:// URL with a host")
    if parts.scheme == "http" and not allow_http:
        raise InvalidInput("Webhook URL must use https")
    if not allow_private and addresses.host_problem(host):
        raise InvalidInput("Webhook URL must not point to a private or loopback address")
    return url.strip()


# --- payloads and signatures ------------------------------------------------------------


class EventSource(ReadModel, frozen=True):
    """What a webhook event says about its execution (the RETURNING columns of a transition)."""

    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("output",)

    id: UUID
    workflow: str
    api_key: UUID
    status: str
    started_at: datetime
    completed_at: datetime | None
    output: ExecutionOutput | None
    error: str | None
    approval_status: str | None = None
    # execution.delivery_updated: the counts it reports (web.domain.delivery_statuses).
    delivery: dict[str, int] | None = None
    # The events its key wants; None when the key has no webhook URL (EVENT_COLUMNS).
    webhook_events: list[str] | None = None


def build_payload(event: str, execution: EventSource) -> str:
    """public-api.md "Webhook Payload Structure", serialised once: these exact bytes are
    signed and sent on every attempt."""
    data: dict[str, object] = {
        "status": execution.status,
        "startedAt": clock.iso(execution.started_at),
        "completedAt": clock.iso(execution.completed_at),
    }
    if event == COMPLETED:
        output = execution.output or {}
        data["output"] = {
            "successCount": output.get("successCount", 0),
            "failedCount": output.get("failedCount", 0),
        }
    if event == FAILED:
        data["error"] = execution.error
    if event == CANCELLED:
        data["approvalStatus"] = execution.approval_status
        data["error"] = execution.error
    if event == DELIVERY_UPDATED:
        data["delivery"] = execution.delivery or {}
    payload = {
        "event": event,
        "executionId": str(execution.id),
        "workflowId": execution.workflow,
        "timestamp": clock.iso(clock.now()),
        "data": data,
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def spec_signature(secret: str, body: bytes) -> str:
    """`X-Webhook-Signature`: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks `webhook-signature`: v1,<base64 HMAC-SHA256 of "id.timestamp.body">,
    keyed with the UTF-8 bytes of the secret."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def delivery_headers(
    event: str, execution_id: str, webhook_id: str, body: bytes, secret: str | None, now: int
) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Webhook-Event": event,
        "X-Webhook-Execution-Id": execution_id,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(now),
    }
    if secret:
        headers["X-Webhook-Signature"] = spec_signature(secret, body)
        headers["webhook-signature"] = standard_signature(secret, webhook_id, now, body)
    return headers


# --- the outbox ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NewEvent:
    id: UUID
    queue_now: bool  # False while an earlier event of the same execution is still pending


async def record_event(event: str, execution: EventSource) -> NewEvent | None:
    """Write `event` for `execution` if its key wants it. Call inside the transaction that
    changed the execution's status (its row is locked, which orders the sequence numbers)."""
    if event not in (execution.webhook_events or ()):
        return None
    rows = await WebhookEvent.raw(
        "SELECT COALESCE(MAX(sequence), 0) + 1 AS next, "
        "  COUNT(*) FILTER (WHERE status = 'pending') AS pending "
        "FROM webhook_event WHERE execution = {}",
        execution.id,
    )
    record = WebhookEvent(
        execution=execution.id,
        api_key=execution.api_key,
        sequence=rows[0]["next"],
        event=event,
        payload=build_payload(event, execution),
    )
    await record.save()
    return NewEvent(id=record.id, queue_now=rows[0]["pending"] == 0)


@dataclass(frozen=True)
class Delivery:
    """What one attempt needs: the event, and the key's current URL and secret."""

    event_id: UUID
    execution_id: UUID
    event: str
    payload: str
    status: str
    attempts: int
    total_attempts: int
    url: str | None
    secret: str | None


async def load_delivery(event_id: UUID) -> Delivery | None:
    rows = await WebhookEvent.raw(
        "SELECT e.id, e.execution, e.event, e.payload, e.status, e.attempts, "
        "  (SELECT COUNT(*) FROM webhook_attempt a WHERE a.event = e.id) AS total_attempts, "
        "  k.webhook_url, k.webhook_secret "
        "FROM webhook_event e JOIN api_key k ON k.id = e.api_key WHERE e.id = {}",
        event_id,
    )
    if not rows:
        return None
    row = rows[0]
    return Delivery(
        event_id=row["id"],
        execution_id=row["execution"],
        event=row["event"],
        payload=row["payload"],
        status=row["status"],
        attempts=row["attempts"],
        total_attempts=row["total_attempts"],
        url=row["webhook_url"],
        secret=row["webhook_secret"],
    )


@dataclass(frozen=True)
class AttemptResult:
    url: str
    status_code: int | None
    duration_ms: int
    error: str | None
    response_body: str | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


async def record_attempt(delivery: Delivery, result: AttemptResult, *, final: bool) -> UUID | None:
    """Log the attempt and count it. When the event is finished (delivered, or `final` failure)
    return the next pending event of the execution to queue, if any."""
    async with pool.engine().transaction():
        # Lock the execution row: record_event takes the same lock, so ordering holds.
        await Execution.raw(
            "SELECT id FROM execution WHERE id = {} FOR UPDATE", delivery.execution_id
        )
        await WebhookAttempt.insert(
            WebhookAttempt(
                event=delivery.event_id,
                attempt_number=delivery.total_attempts + 1,
                url=result.url,
                status_code=result.status_code,
                duration_ms=result.duration_ms,
                error=result.error,
                response_body=result.response_body,
            )
        )
        status = "delivered" if result.ok else "failed" if final else "pending"
        await WebhookEvent.raw(
            "UPDATE webhook_event SET attempts = attempts + 1, status = {}, "
            "  finished_at = CASE WHEN {} = 'pending' THEN NULL ELSE now() END "
            "WHERE id = {}",
            status,
            status,
            delivery.event_id,
        )
        following = None if status == "pending" else await _next_pending(delivery.execution_id)
    return following


async def _next_pending(execution_id: UUID) -> UUID | None:
    row = (
        await WebhookEvent.select(WebhookEvent.id)
        .where(WebhookEvent.execution == execution_id, WebhookEvent.status == "pending")
        .order_by(WebhookEvent.sequence)
        .first()
    )
    return None if row is None else row["id"]


async def redeliver_event(redis: ScriptClient | Redis, event_id: UUID, *, actor: Actor) -> None:
    """Send an event again (same webhook-id, same body): a new cycle of attempts, queued
    after the event is reset (and its `webhook.redelivered` entry committed). NotFound for an
    unknown event; Conflict once the retention policy removed its body (web.domain.retention)."""
    async with pool.engine().transaction():
        found = await WebhookEvent.raw(
            "SELECT payload = '' AS purged FROM webhook_event WHERE id = {} FOR UPDATE", event_id
        )
        if not found:
            raise NotFound("Webhook event not found")
        if found[0]["purged"]:
            raise Conflict("Webhook event body was removed by the retention policy")
        updated = await WebhookEvent.raw(
            "UPDATE webhook_event AS w SET status = 'pending', attempts = 0, finished_at = NULL "
            "FROM (SELECT id, status FROM webhook_event WHERE id = {}) AS old "
            "WHERE w.id = old.id RETURNING w.execution, w.event, old.status AS old_status",
            event_id,
        )
        await audit.record(
            actor,
            "webhook.redelivered",
            "webhook_event",
            event_id,
            execution_id=updated[0]["execution"],
            before={"event": updated[0]["event"], "status": updated[0]["old_status"]},
            after={"event": updated[0]["event"], "status": "pending"},
        )
    await queue.enqueue_webhook(redis, event_id)


class AttemptView(ReadModel, frozen=True):
    """One logged attempt of a webhook event."""

    event: UUID
    attempt_number: int
    url: str
    status_code: int | None
    duration_ms: int
    error: str | None
    response_body: str | None
    created_at: datetime


class DeliveryView(ReadModel, frozen=True):
    """One webhook event of an execution and its attempts (the delivery log)."""

    id: UUID
    sequence: int
    event: str
    status: str
    attempts: int
    created_at: datetime
    finished_at: datetime | None
    attempts_log: list[AttemptView]


async def list_deliveries(execution_id: UUID) -> list[DeliveryView]:
    """Every event of an execution with its attempts, in order (the delivery log)."""
    events = (
        await WebhookEvent.select(
            WebhookEvent.id,
            WebhookEvent.sequence,
            WebhookEvent.event,
            WebhookEvent.status,
            WebhookEvent.attempts,
            WebhookEvent.created_at,
            WebhookEvent.finished_at,
        )
        .where(WebhookEvent.execution == execution_id)
        .order_by(WebhookEvent.sequence)
    )
    if not events:
        return []
    attempts = (
        await WebhookAttempt.select(
            WebhookAttempt.event,
            WebhookAttempt.attempt_number,
            WebhookAttempt.url,
            WebhookAttempt.status_code,
            WebhookAttempt.duration_ms,
            WebhookAttempt.error,
            WebhookAttempt.response_body,
            WebhookAttempt.created_at,
        )
        .where(WebhookAttempt.event.is_in([e["id"] for e in events]))
        .order_by(WebhookAttempt.attempt_number)
    )
    return [
        from_row(
            {**event, "attempts_log": [a for a in attempts if a["event"] == event["id"]]},
            DeliveryView,
        )
        for event in events
    ]
