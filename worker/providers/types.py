"""The types every provider and the steps that use them share: the two provider errors, what a
content provider and a messenger look like, what they take and return, and what they may use
besides their settings. Imports no other module of worker/, so any of them can import it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import httpx
from redis.asyncio import Redis

from web.domain.statuses import SendStatus


class ProviderConfigError(ValueError):
    """A provider cannot run with these settings (or a missing environment variable): the step,
    and so the execution, fails with this message before any row is touched."""


class ProviderError(Exception):
    """One row failed at the provider (an error answer, a timeout): that row fails, the others
    go on. The message is the provider's own, never a secret."""


class ProviderUnusable(ProviderError):
    """No row can succeed with these settings, and no retry will change that (a refused key, a
    wrong URL, a server that never answered the first rows): the step stops offering rows and
    the execution fails with this one message."""


class Unreachable(ProviderError):
    """Every attempt of a call failed before the request left (connection refused, connect
    timeout): the provider certainly did not get it."""


class NoAnswer(ProviderError):
    """A call got no answer after its request may have been sent (read timeout, connection
    dropped): whether the provider acted on it is unknown."""


class OutOfTurn(Exception):
    """The provider's shared limit (worker.providers.throttle) gives this call no turn before
    the job's deadline: nothing was sent, the row is left for the step's next job."""


@dataclass(frozen=True)
class ProviderLimits:
    """Where providers take turns under their account's shared limits: the worker's Redis, and
    the time.monotonic() past which the step's job would rather hand on than wait."""

    redis: Redis
    deadline: float = math.inf


def unknown_delivery(reason: str) -> str:
    """The error of a row whose message may or may not have reached the provider."""
    return f"Delivery state unknown: {reason}; not resent to avoid a duplicate"


@dataclass(frozen=True)
class ProviderContext:
    """What a provider may use besides its step's settings."""

    http: httpx.AsyncClient
    execution_id: UUID
    # The sandbox messenger's pause per message (FLOWGATE_SANDBOX_SEND_DELAY_SECONDS).
    sandbox_delay_seconds: float = 0.0
    # Shared provider limits (None: switched off, or outside a run such as the preflight).
    limits: ProviderLimits | None = None


# --- content (`generate_content`) ---------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    content: str
    # The provider's token usage for this row (the chat-completions `usage` object), if any.
    usage: dict[str, Any] | None = None


class ContentProvider(Protocol):
    # True when each row is a call over the network: rows are then generated `concurrency` at
    # a time and each is saved as soon as it is done, so a re-run never pays for a row twice.
    remote: bool
    concurrency: int

    async def generate(self, row: dict[str, Any]) -> Generated:
        """The message for one row; ProviderError fails this row only, ProviderUnusable the
        step."""
        ...


class ContentProviderClass(Protocol):
    """A content provider class, as the registry of worker.providers.content holds it."""

    def for_step(self, settings: dict[str, Any], context: ProviderContext) -> ContentProvider:
        """The provider for a step's settings; ProviderConfigError if they cannot work."""
        ...


# --- messaging (`send_message`) -----------------------------------------------------------------


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
    # The provider may have accepted the message (a 5xx, no answer): failed, never resent.
    delivery_unknown: bool = False
    # No other row can succeed either (ProviderUnusable's cases): the step stops sending.
    stop: bool = False

    @classmethod
    def failed(cls, row_id: UUID, error: str, *, stop: bool = False) -> SendResult:
        return cls(row_id, SendStatus.FAILED, None, error, stop=stop)

    @classmethod
    def unknown(cls, row_id: UUID, reason: str) -> SendResult:
        return cls(row_id, SendStatus.FAILED, None, unknown_delivery(reason), delivery_unknown=True)

    @classmethod
    def from_error(cls, row_id: UUID, exc: ProviderError, *, answered: bool) -> SendResult:
        """What a failed send call means for its row, for every HTTP messenger alike: certainly
        not sent (Unreachable: and before the API ever answered, nothing is listening there, so
        the step stops), maybe taken (NoAnswer: delivery unknown, never resent), or refused."""
        if isinstance(exc, Unreachable):
            return cls.failed(row_id, str(exc), stop=not answered)
        if isinstance(exc, NoAnswer):
            return cls.unknown(row_id, str(exc))
        return cls.failed(row_id, str(exc))


class Messenger(Protocol):
    # True when sending a row twice cannot deliver it twice (the provider deduplicates per row).
    resend_safe: bool
    # True when `send` has also saved each row's result (the sandbox: its messages and the rows'
    # results are one statement in our own database), so the step saves nothing after it.
    saves_results: bool
    # How many messages may be in flight at once.
    concurrency: int

    async def wait_turn(self, deadline: float) -> bool:
        """Wait for this message's turn under the account's shared limit (at once without one);
        False, having taken nothing, when it would come only after `deadline` (monotonic)."""
        ...

    async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """One result per message, in order: `sent` with the provider's message id, or
        `failed` with the provider's error (`delivery_unknown` when it may have been accepted,
        `stop` when no other row can succeed). Never raises for one message's failure."""
        ...


class MessengerClass(Protocol):
    """A messenger class, as the registry of worker.providers.messaging holds it."""

    def for_step(self, settings: dict[str, Any], context: ProviderContext) -> Messenger:
        """The messenger for a step's settings; ProviderConfigError if they cannot work."""
        ...
