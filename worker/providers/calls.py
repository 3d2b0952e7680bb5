"""How every HTTP provider calls out: one JSON POST over the worker's shared httpx client, with a
deadline per attempt and retries that honour `Retry-After`.

All the numbers come from the step's settings (see web.domain.workflows `_HTTP_CALLS`), so tests
shrink them. Whether a failed attempt may be repeated depends on the call: generating content
again only costs tokens (429 and 5xx answers, timeouts are retried), but a message whose request
may have reached the provider must not be sent again (`resend_unsure=False`, and a `retryable`
that accepts only answers the provider documents as "not processed", such as 429): then only
failures that prove the request never left (connection refused, connect timeout) are retried,
besides those answers.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from worker import outbound
from worker.providers.types import NoAnswer, ProviderError, Unreachable

DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF_SECONDS = 1.0
DEFAULT_MAX_RETRY_WAIT_SECONDS = 60.0
DEFAULT_CONCURRENCY = 4

# Failures that prove the request was never sent: always safe to try again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class CallPolicy:
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS
    # A Retry-After longer than this is not waited for: the row fails with the answer instead.
    max_retry_wait_seconds: float = DEFAULT_MAX_RETRY_WAIT_SECONDS
    concurrency: int = DEFAULT_CONCURRENCY

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> CallPolicy:
        def number(name: str, default: float) -> float:
            value = settings.get(name)
            return default if value is None else float(value)

        return cls(
            timeout_seconds=number("timeout_seconds", DEFAULT_TIMEOUT_SECONDS),
            max_retries=int(number("max_retries", DEFAULT_MAX_RETRIES)),
            backoff_seconds=number("retry_backoff_seconds", DEFAULT_BACKOFF_SECONDS),
            max_retry_wait_seconds=number("max_retry_wait_seconds", DEFAULT_MAX_RETRY_WAIT_SECONDS),
            concurrency=max(int(number("concurrency", DEFAULT_CONCURRENCY)), 1),
        )

    def backoff(self, retry: int) -> float:
        """Exponential backoff with a little jitter, so parallel rows do not retry in step."""
        return self.backoff_seconds * (2.0**retry) * random.uniform(1.0, 1.25)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


class SharedLimit(Protocol):
    """An account's shared limit (worker.providers.throttle.Throttle), as a call sees it: the
    caller took the first attempt's turn; each retry takes one, and every answer is reported."""

    async def retry_turn(self) -> None: ...

    async def observe(self, response: httpx.Response) -> None: ...


def is_retryable(response: httpx.Response) -> bool:
    """The default for calls that may be repeated freely (generating content): 429 and 5xx."""
    return response.status_code == 429 or response.status_code >= 500


async def post_json(
    http: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    policy: CallPolicy,
    *,
    resend_unsure: bool,
    who: str,
    retryable: Callable[[httpx.Response], bool] = is_retryable,
    limit: SharedLimit | None = None,
) -> httpx.Response:
    """POST `body` as JSON; the last answer once `retryable` refuses it or retries are spent.

    A failure without an answer is retried when the request certainly never left (connection
    refused, connect timeout), and otherwise only with `resend_unsure`. When no answer came it
    raises Unreachable (every attempt failed before sending) or NoAnswer (the request may have
    been received), naming `who`. With `limit`, every retry waits for its turn under the
    account's shared limit and every answer is reported to it (a 429 slows every worker).
    """
    retry = 0
    every_attempt_unsent = True
    while True:
        if retry and limit is not None:
            await limit.retry_turn()
        try:
            async with asyncio.timeout(policy.timeout_seconds):
                response = await http.post(
                    url,
                    json=body,
                    headers=headers,
                    timeout=httpx.Timeout(policy.timeout_seconds),
                )
        except outbound.AddressRefused as exc:  # the SSRF policy: trying again cannot help
            raise ProviderError(f"could not reach {who} (refused: {exc})") from None
        except (TimeoutError, httpx.TimeoutException, httpx.TransportError) as exc:
            unsent = isinstance(exc, _NOT_SENT)
            every_attempt_unsent = every_attempt_unsent and unsent
            if (unsent or resend_unsure) and retry < policy.max_retries:
                await asyncio.sleep(policy.backoff(retry))
                retry += 1
                continue
            if every_attempt_unsent:
                raise Unreachable(_unreachable(exc, who, url, retry + 1)) from None
            raise NoAnswer(_no_answer(exc, who, policy)) from None
        if limit is not None:
            await limit.observe(response)
        if not retryable(response) or retry >= policy.max_retries:
            return response
        wait = retry_after_seconds(response)
        if wait is None:
            wait = policy.backoff(retry)
        elif wait > policy.max_retry_wait_seconds:
            return response
        await asyncio.sleep(wait)
        retry += 1


def _unreachable(exc: Exception, who: str, url: str, attempts: int) -> str:
    reason = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    return f"could not reach {who} at {url} ({reason}; {tries})"


def _no_answer(exc: Exception, who: str, policy: CallPolicy) -> str:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"{who} did not answer within {policy.timeout_seconds:g} s"
    return f"the connection to {who} failed ({type(exc).__name__})"


def error_text(response: httpx.Response, limit: int = 300) -> str:
    """The start of an error answer's body, for a row's error."""
    text = response.text.strip().replace("\n", " ")
    return text[:limit] + ("…" if len(text) > limit else "")
