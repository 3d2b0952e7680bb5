"""The interface of messaging providers, and picking one from a `send_message` step's settings.

`resend_safe` tells the step how to stay idempotent across re-runs. The sandbox records at most
one message per row, so offering it a row again is harmless. An HTTP provider cannot deduplicate
for us, so the step marks each row `sending` before the call and saves the result right after; a
row found still `sending` on a re-run (the worker died between the two) is reported failed and
not sent again: a missing message can be re-sent by people, a duplicate cannot be taken back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import httpx

from web.domain.statuses import SendStatus
from worker.providers import ProviderConfigError


@dataclass(frozen=True)
class OutgoingMessage:
    row_id: UUID
    recipient: str
    body: str
    # The row's input fields (the `http` provider forwards them; `customerId` among them).
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    row_id: UUID
    status: SendStatus
    message_id: str | None
    error: str | None = None


class Messenger(Protocol):
    # True when sending a row twice cannot deliver it twice (the provider deduplicates per row).
    resend_safe: bool
    # How many messages may be in flight at once.
    concurrency: int

    async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """One result per message, in order: `sent` with the provider's message id, or
        `failed` with the provider's error. Never raises for one message's failure."""
        ...


async def send_each(
    messages: Sequence[OutgoingMessage],
    concurrency: int,
    send_one: Callable[[OutgoingMessage], Awaitable[SendResult]],
) -> list[SendResult]:
    """`send_one` for every message, at most `concurrency` at a time; results in order."""
    limit = asyncio.Semaphore(concurrency)

    async def one(message: OutgoingMessage) -> SendResult:
        async with limit:
            return await send_one(message)

    return list(await asyncio.gather(*(one(m) for m in messages)))


def messenger(
    settings: dict[str, Any],
    *,
    http: httpx.AsyncClient,
    execution_id: UUID,
    sandbox_delay_seconds: float = 0.0,
) -> Messenger:
    """The provider a step's settings name (default `sandbox`); ProviderConfigError if the
    settings cannot work (unknown provider, missing environment variable)."""
    from worker.providers.http_gateway import HttpGatewayMessenger
    from worker.providers.sandbox import SandboxMessenger
    from worker.providers.whatsapp_cloud import WhatsAppCloudMessenger

    name = settings.get("provider", "sandbox")
    if name == "sandbox":
        return SandboxMessenger(str(settings.get("channel", "whatsapp")), sandbox_delay_seconds)
    if name == "whatsapp_cloud":
        return WhatsAppCloudMessenger(settings, http)
    if name == "http":
        return HttpGatewayMessenger(settings, http, execution_id)
    raise ProviderConfigError(f"Unknown messaging provider {name!r}")
