"""WhatsApp Cloud API webhooks (/webhooks/whatsapp): Meta's verification handshake, the
`X-Hub-Signature-256` check, storing each notification as it came, and processing it off the
request path: `statuses[]` move rows' delivery status (web.domain.delivery_statuses),
`messages[]` with an opt-out or opt-in keyword change the suppression list
(web.domain.suppressions).

A notification is stored (whatsapp_notification) in the request and acknowledged; a job on the
webhooks' queue processes it, and the reconciler queues again any left unprocessed. Processing
twice is harmless: statuses only move forward and opt-outs are upserts. Nothing personal is
logged: no phone number (masked), no message text, no message id. Imports only web.domain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

from web.domain import delivery_statuses, pool, queue, suppressions
from web.domain.errors import DomainError, Forbidden, Unauthorized, is_unavailable
from web.domain.script_client import ScriptClient
from web.domain.tables import WhatsAppNotification

logger = logging.getLogger("flowgate.whatsapp")

SIGNATURE_HEADER = "x-hub-signature-256"
BAD_SIGNATURE = "Invalid or missing X-Hub-Signature-256"
NOT_CONFIGURED = "WhatsApp webhook is not configured: set FLOWGATE_WHATSAPP_APP_SECRET"


class NotConfigured(DomainError):
    status_code = 503


def verify_handshake(
    mode: str | None, token: str | None, challenge: str | None, verify_token: str | None
) -> str:
    """Meta's verification request: the challenge to echo, or Forbidden."""
    if (
        verify_token is None
        or mode != "subscribe"
        or token is None
        or challenge is None
        or not hmac.compare_digest(token.encode(), verify_token.encode())
    ):
        raise Forbidden("Verification failed")
    return challenge


def check_signature(body: bytes, header: str | None, app_secret: str | None) -> None:
    """`sha256=<hex HMAC-SHA256 of the raw body keyed with the app secret>`, compared in
    constant time; Unauthorized otherwise, NotConfigured without an app secret."""
    if not app_secret:
        raise NotConfigured(NOT_CONFIGURED)
    expected = "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    if header is None or not hmac.compare_digest(header.strip().encode(), expected.encode()):
        raise Unauthorized(BAD_SIGNATURE)


async def receive(redis: ScriptClient | Redis, body: bytes) -> UUID:
    """Store a verified notification and queue its processing (if Redis refuses, the
    reconciler queues it). The body is kept as received, decoded as UTF-8 (replacing what is
    not), so nothing a sender puts in it can fail the acknowledgement."""
    text = body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    rows = await pool.fetch_rows(
        "INSERT INTO whatsapp_notification (id, body, received_at) "
        "VALUES (gen_random_uuid(), $1, now()) RETURNING id",
        text,
    )
    notification_id: UUID = rows[0]["id"]
    try:
        await queue.enqueue_whatsapp_notification(redis, notification_id)
    except Exception:
        logger.warning("could not queue WhatsApp notification %s; the reconciler will",
                       notification_id)  # fmt: skip
    return notification_id


@dataclass
class Processed:
    statuses: int = 0
    unknown: int = 0
    opted_out: int = 0
    opted_in: int = 0
    executions: set[UUID] = field(default_factory=set)


def _keyword(text: Any) -> str:
    return "".join(str(text or "").split()).upper()


async def _status(item: dict[str, Any], done: Processed) -> None:
    message_id, status = item.get("id"), item.get("status")
    if not isinstance(message_id, str) or status not in delivery_statuses.STATUSES:
        return  # another kind of status (e.g. "deleted", "warning"): not ours to track
    applied = await delivery_statuses.apply_status(
        message_id, str(status), delivery_statuses.error_text(item.get("errors"))
    )
    done.statuses += 1
    if not applied.known:
        done.unknown += 1
        # The id names a message to a person: never logged, only that one was unknown.
        logger.info(
            "WhatsApp status %r for a message id no row has (recipient %s)",
            status,
            suppressions.mask(str(item.get("recipient_id") or "")),
        )
    elif applied.execution is not None:
        done.executions.add(applied.execution)


async def _message(
    item: dict[str, Any], opt_out: tuple[str, ...], opt_in: tuple[str, ...], done: Processed
) -> None:
    if item.get("type") != "text":
        return
    text = item.get("text")
    word = _keyword(text.get("body") if isinstance(text, dict) else None)
    phone = suppressions.recipient_key(item.get("from"))
    if phone is None or word not in (*opt_out, *opt_in):
        return
    if word in opt_out:
        await suppressions.add(phone, "Replied " + word, suppressions.Source.INBOUND)
        done.opted_out += 1
        logger.info("opt-out by WhatsApp reply from %s", suppressions.mask(phone))
    else:
        if await suppressions.remove_if_listed(phone):
            done.opted_in += 1
            logger.info("opt-in by WhatsApp reply from %s", suppressions.mask(phone))


def _items(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


async def process(
    redis: ScriptClient | Redis,
    notification_id: UUID,
    opt_out: tuple[str, ...],
    opt_in: tuple[str, ...],
    interval_seconds: float,
) -> Processed | None:
    """Apply one stored notification; None if it is gone or already processed. A body that is
    not a Cloud API notification is marked processed with its error (Meta never resends it)."""
    row = await pool.fetch_row(
        "SELECT body FROM whatsapp_notification WHERE id = $1 AND processed_at IS NULL",
        notification_id,
    )
    if row is None:
        return None
    done = Processed()
    error = None
    try:
        payload = json.loads(row["body"])
        changes = [
            change.get("value") or {}
            for entry in payload.get("entry") or []
            for change in entry.get("changes") or []
        ]
    except (ValueError, AttributeError, TypeError):
        changes, error = [], "not a WhatsApp Cloud API notification"
    try:
        for value in changes:
            if not isinstance(value, dict):
                continue
            for item in _items(value.get("statuses")):
                await _status(item, done)
            for item in _items(value.get("messages")):
                await _message(item, opt_out, opt_in, done)
    except Exception as exc:
        if is_unavailable(exc):
            raise  # tried again later (the job's retry, or the reconciler)
        # A shape we do not read: kept with its error, never retried in a loop.
        error = f"could not process: {type(exc).__name__}"
        logger.warning("WhatsApp notification %s: %s", notification_id, error)
    for execution_id in done.executions:
        await delivery_statuses.notify_counts(redis, execution_id, interval_seconds)
    await WhatsAppNotification.raw(
        "UPDATE whatsapp_notification SET processed_at = now(), error = {} WHERE id = {}",
        error,
        notification_id,
    )
    return done


async def unprocessed(older_than_seconds: float) -> list[UUID]:
    """Notifications stored but not processed for a while (their job lost): for the reconciler."""
    rows = await pool.fetch_rows(
        "SELECT id FROM whatsapp_notification WHERE processed_at IS NULL "
        "AND received_at < now() - make_interval(secs => $1) ORDER BY received_at LIMIT 1000",
        older_than_seconds,
    )
    return [row["id"] for row in rows]


KEEP_PROCESSED_DAYS = 7


async def purge_processed(days: int = KEEP_PROCESSED_DAYS, batch_size: int = 5_000) -> int:
    """Forget notifications processed more than `days` ago (the worker's hourly cron), in
    batches; how many were deleted. Their effects (statuses, opt-outs) stay."""
    removed = 0
    while True:
        rows = await pool.fetch_rows(
            "WITH gone AS (DELETE FROM whatsapp_notification WHERE id IN ("
            "  SELECT id FROM whatsapp_notification "
            "  WHERE processed_at < now() - make_interval(days => $1) LIMIT $2"
            ") RETURNING 1) SELECT count(*) AS n FROM gone",
            days,
            batch_size,
        )
        done = int(rows[0]["n"])
        removed += done
        if done < batch_size:
            return removed
