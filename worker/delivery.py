"""Sends one webhook attempt over httpx and records it (web.domain.webhooks builds, this sends).

A receiver that is slow, down or wrong only ever costs this job: one deadline bounds each
attempt (FLOWGATE_WEBHOOK_TIMEOUT_SECONDS, however slowly the answer trickles in), the answer
read is capped, deliveries run on their own queue and worker loop (worker/settings.py), and the
execution that produced the event never waits for it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from uuid import UUID

import httpx

from web.domain import metrics, webhooks
from web.domain.webhooks import AttemptResult, Delivery
from web.settings import Settings
from worker import outbound


@dataclass(frozen=True)
class DeliveryOutcome:
    """`retry_in` seconds when the event should be tried again; `next_event` to queue after a
    finished one (events of an execution go out in order)."""

    state: str
    retry_in: float | None = None
    next_event: UUID | None = None


def _refusal(url: str, settings: Settings) -> str | None:
    """Why `url` may not be called at all now (the rules of web.domain.webhooks.check_url, which
    may have changed since the URL was set), or None. What a name resolves to is checked by the
    client's transport at the connection itself (worker/outbound.py)."""
    try:
        webhooks.check_url(
            url,
            allow_http=settings.webhook_allow_http,
            allow_private=settings.webhook_allow_private,
        )
    except Exception as exc:  # InvalidInput: the URL no longer passes the rules
        return f"Refused: {exc}"
    return None


# What one POST came to: the receiver's status and the start of its answer, or why none.
_Answer = tuple[int | None, str | None, str | None]  # (status, error, body)


async def _attempt(
    http: httpx.AsyncClient, delivery: Delivery, settings: Settings
) -> AttemptResult:
    """One POST of the event, timed, as the attempt to record."""
    url = delivery.url or ""
    started = time.monotonic()
    status, error, body = await _post(http, delivery, url, settings)
    seconds = time.monotonic() - started
    metrics.webhook_attempt(status, error, seconds)
    elapsed = int(seconds * 1000)
    return AttemptResult(url, status, elapsed, error, body)


async def _post(
    http: httpx.AsyncClient, delivery: Delivery, url: str, settings: Settings
) -> _Answer:
    if not url:
        return None, "No webhook URL is configured for this API key", None
    refusal = _refusal(url, settings)
    if refusal:
        return None, refusal, None
    body = delivery.payload.encode()
    deadline = settings.webhook_timeout_seconds
    try:
        # One deadline for the whole attempt: resolving, connecting, sending and reading the
        # answer. httpx's own timeouts are per read, which a receiver trickling a byte every
        # few seconds never hits.
        async with asyncio.timeout(deadline):
            async with http.stream(
                "POST",
                url,
                content=body,
                headers=_signed_headers(delivery, body),
                timeout=deadline,
                follow_redirects=False,
            ) as response:
                return response.status_code, None, await _start_of_body(response)
    except (TimeoutError, httpx.TimeoutException):
        return None, f"Timed out after {deadline:g} s", None
    except outbound.AddressRefused as exc:
        return None, f"Refused: {exc}", None
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, None


def _signed_headers(delivery: Delivery, body: bytes) -> dict[str, str]:
    headers = webhooks.delivery_headers(
        delivery.event,
        str(delivery.execution_id),
        str(delivery.event_id),
        body,
        delivery.secret,
        int(time.time()),
    )
    # The answer is read as sent, never decompressed: a small gzip body cannot grow in memory.
    headers["Accept-Encoding"] = "identity"
    return headers


async def _start_of_body(response: httpx.Response) -> str:
    """The start of the receiver's answer, as stored (RESPONSE_BODY_LIMIT bytes). Reading stops
    there: no more than one network read of httpcore's (64 KiB) is taken off the connection,
    which is then closed with the rest unread; however long the answer, memory stays small."""
    received = b""
    async for chunk in response.aiter_raw(webhooks.RESPONSE_BODY_LIMIT):
        received += chunk
        if len(received) >= webhooks.RESPONSE_BODY_LIMIT:
            break
    return received[: webhooks.RESPONSE_BODY_LIMIT].decode("utf-8", "replace")


async def deliver(http: httpx.AsyncClient, event_id: UUID, settings: Settings) -> DeliveryOutcome:
    """One attempt at `event_id`. Attempts 1..n+1 follow settings.webhook_retry_delays (n of
    them); after the last, the event is given up as failed."""
    delivery = await webhooks.load_delivery(event_id)
    if delivery is None or delivery.status != "pending":
        return DeliveryOutcome("nothing to do")
    result = await _attempt(http, delivery, settings)
    delays = settings.webhook_retry_delays
    attempt = delivery.attempts + 1  # in this delivery cycle
    final = result.ok or attempt > len(delays)
    next_event = await webhooks.record_attempt(delivery, result, final=final)
    if result.ok:
        return DeliveryOutcome("delivered", next_event=next_event)
    if final:
        return DeliveryOutcome("failed", next_event=next_event)
    return DeliveryOutcome("retry", retry_in=delays[attempt - 1])
