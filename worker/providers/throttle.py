"""Taking turns under a provider account's shared limits (web.domain.provider_limits), for the
HTTP providers: before each call a worker takes its cost and sleeps the wait the bucket names
(bounded by the step's deadline: no turn in time raises OutOfTurn / answers False, and the row
is left for the next job), and after each answer it tells the bucket what the provider said
(429 with Retry-After blocks it for everyone; `x-ratelimit-remaining-*` clamps it).

The limits come from the step's settings: `requestsPerMinute` and `tokensPerMinute` for an LLM
(per base_url + API key), `messagesPerSecond` for a WhatsApp number (per phone_number_id,
default 80). A bucket holds a quarter of a second of its rate (at least one call), so a burst never
exceeds what the provider refills meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time

import httpx

from web.domain import provider_limits
from web.domain.errors import is_unavailable
from web.domain.provider_limits import Bucket
from worker.providers.calls import retry_after_seconds
from worker.providers.types import ProviderLimits

logger = logging.getLogger("flowgate.throttle")

# The burst a bucket allows: this much of a second's rate (at least one call).
BURST_SECONDS = 0.25
# How long a call waits for a turn when the step's job has no nearer deadline.
MAX_WAIT_SECONDS = 3600.0
# A 429 without Retry-After blocks the bucket this long.
DEFAULT_BLOCK_SECONDS = 1.0
# How many times a caller takes a new turn when a provider's 429 voided its turn, at most.
RETAKES = 5


def bucket(key: str, per_second: float) -> Bucket:
    return Bucket(key, per_second, max(per_second * BURST_SECONDS, 1.0))


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value: str | None) -> float | None:
    """OpenAI's reset durations (`1s`, `6m0s`, `59.5s`, `20ms`) or plain seconds; None if not."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class Throttle:
    """One provider account's shared buckets: `requests` (one per call) and, for an LLM,
    `tokens` (an estimate per call, corrected by the answer's usage)."""

    def __init__(
        self, limits: ProviderLimits, requests: Bucket | None, tokens: Bucket | None = None
    ) -> None:
        self._limits = limits
        self._requests = requests
        self._tokens = tokens

    @property
    def _buckets(self) -> list[Bucket]:
        return [b for b in (self._requests, self._tokens) if b is not None]

    async def turn(self, tokens: float = 0.0, deadline: float | None = None) -> bool:
        """Take one call (and `tokens`) and wait for the turn; False, nothing taken, when the
        turn would come after `deadline` (the step's, by default)."""
        buckets = self._buckets
        if not buckets:
            return True
        limit = self._limits.deadline if deadline is None else deadline
        max_wait = MAX_WAIT_SECONDS if math.isinf(limit) else max(limit - time.monotonic(), 0.0)
        costs = [1.0 if b is self._requests else max(tokens, 0.0) for b in buckets]
        redis = self._limits.redis
        for _ in range(RETAKES):
            if not math.isinf(limit):
                max_wait = max(limit - time.monotonic(), 0.0)
            turn = await provider_limits.take(redis, buckets, costs, max_wait)
            if turn is None:
                return False
            if turn.wait > 0:
                await asyncio.sleep(turn.wait)
            now = await provider_limits.blocked_for(redis, buckets)
            if now.epoch == turn.epoch:
                return True
            # A 429 since the turn was given voided it: take a new one, after the block.
        return True

    async def retry_turn(self) -> None:
        """The turn of a retry (after a 429 or a failed attempt): waited for whatever the
        deadline; a Redis failure here does not stop the call (the provider still refuses)."""
        try:
            await self.turn(deadline=math.inf)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            logger.warning("provider limits: Redis unreachable, retrying without a turn")

    async def observe(self, response: httpx.Response) -> None:
        """Tell the shared buckets what the provider's answer says about its limit."""
        try:
            await self._observe(response)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            logger.warning("provider limits: Redis unreachable, the answer's limits not kept")

    async def _observe(self, response: httpx.Response) -> None:
        redis = self._limits.redis
        if response.status_code == 429 and self._buckets:
            wait = retry_after_seconds(response)
            await provider_limits.block(
                redis, self._buckets, DEFAULT_BLOCK_SECONDS if wait is None else wait
            )
            return
        headers = response.headers
        for kind, bucket_ in (("requests", self._requests), ("tokens", self._tokens)):
            remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
            if bucket_ is None or remaining is None:
                continue
            reset = duration_seconds(headers.get(f"x-ratelimit-reset-{kind}"))
            per_minute = _number(headers.get(f"x-ratelimit-limit-{kind}"))
            if remaining < 1 and per_minute:
                # The reset is until the limit is whole again; one call needs only its share.
                share = 60.0 * (1 - remaining) / per_minute
                reset = share if reset is None else min(reset, share)
            await provider_limits.clamp(
                redis, bucket_, remaining, DEFAULT_BLOCK_SECONDS if reset is None else reset
            )

    async def correct_tokens(self, estimate: float, used: float | None) -> None:
        """The answer used `used` tokens where `estimate` were taken: the difference back (or
        the rest taken)."""
        if self._tokens is None or used is None:
            return
        try:
            await provider_limits.adjust(self._limits.redis, self._tokens, estimate - used)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
