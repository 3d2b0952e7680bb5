"""Limits that hold across processes: the token bucket per API key and the failed-auth
counter per client IP (both in Redis, one atomic script call per request), and the monthly
execution quota per key (in PostgreSQL).

The bucket follows public-api.md "Rate Limit Algorithm": capacity `burst`, refilled
continuously at `refill` tokens a second, one token per request. Time comes from Redis' own
clock (TIME inside the script), so web processes on hosts with skewed clocks share one bucket.

The quota is counted by the statement that stores an execution (web.domain.executions): an
upsert of this month's usage row, refused by the row's check constraint past the limit, so any
number of web processes can never pass it together, and a refusal writes nothing at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from web.domain.errors import Forbidden
from web.domain.script_client import Script, ScriptClient, run_script

USAGE_LIMIT_EXCEEDED = "API key usage limit exceeded"  # public-api.md, "403 Forbidden"
# The check on api_key_usage (used <= monthly_limit) that refuses a count past the limit; the
# count itself is part of the execute statement (web.domain.executions.start_execution).
QUOTA_CONSTRAINT = "within_monthly_limit"


RATE_LIMIT_EXCEEDED = "Rate limit exceeded"  # public-api.md, "429 Too Many Requests"
TOO_MANY_FAILED_AUTHENTICATIONS = "Too many failed authentication attempts"
AUTH_FAILURE_WINDOW_SECONDS = 60

# KEYS[1] bucket hash {tokens, ts}; KEYS[2] failed-auth counter of the client IP; KEYS[3]
# (when ARGV[5] is not empty) the version of the key's cached look-up (web.domain.key_versions).
# ARGV: capacity, refill per second, cost (0 peeks), failures allowed per window, the cached
# version ('' when the key was just read from the database).
# Returns {allowed, tokens (string: Lua numbers become integers otherwise), now in ms,
#          ip blocked for ms (0 when not blocked), 1 when the cached key is stale (nothing spent)}.
_BUCKET_SCRIPT = Script("""
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2]) / 1000.0
local cost = tonumber(ARGV[3])
local failures_allowed = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local failures = tonumber(redis.call('GET', KEYS[2]) or '0')
if failures >= failures_allowed then
  local ttl = redis.call('PTTL', KEYS[2])
  return {0, '0', now, math.max(ttl, 1), 0}
end
if ARGV[5] ~= '' and (redis.call('GET', KEYS[3]) or '0') ~= ARGV[5] then
  return {0, '0', now, 0, 1}
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  ts = now
end
tokens = math.min(tokens, capacity)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
if cost > 0 then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', ts)
  redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate) + 1000)
end
return {allowed, tostring(tokens), now, 0, 0}
""")

# KEYS[1] failed-auth counter; ARGV window in seconds, failures allowed.
# Returns {failures so far, ms until the window ends}.
_FAILURE_SCRIPT = Script("""
local failures = redis.call('INCR', KEYS[1])
if failures == 1 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
end
return {failures, math.max(redis.call('PTTL', KEYS[1]), 1)}
""")


@dataclass(frozen=True)
class BucketState:
    """One request's look at its key's bucket, and everything the headers need."""

    allowed: bool
    capacity: int
    refill_per_second: float
    tokens: float
    now_ms: int
    ip_blocked_ms: int = 0
    # The key's cached look-up changed since it was cached: read it again (nothing was spent).
    stale: bool = False

    @property
    def remaining(self) -> int:
        """Whole tokens left after this request."""
        return max(math.floor(self.tokens + 1e-9), 0)

    @property
    def seconds_to_full(self) -> int:
        return math.ceil(max(self.capacity - self.tokens, 0) / self.refill_per_second - 1e-9)

    @property
    def reset_ms(self) -> int:
        """Unix time in ms when the bucket will be full again."""
        missing = max(self.capacity - self.tokens, 0)
        return self.now_ms + math.ceil(missing / self.refill_per_second * 1000)

    @property
    def retry_after(self) -> int:
        """Whole seconds until a request can pass again (at least 1)."""
        if self.ip_blocked_ms:
            return max(math.ceil(self.ip_blocked_ms / 1000), 1)
        missing = max(1 - self.tokens, 0)
        return max(math.ceil(missing / self.refill_per_second - 1e-9), 1)


def _bucket_key(api_key_id: UUID) -> str:
    return f"flowgate:bucket:{api_key_id}"


def _auth_failure_key(client_ip: str) -> str:
    return f"flowgate:authfail:{client_ip}"


async def take_token(
    redis: ScriptClient,
    api_key_id: UUID,
    client_ip: str,
    *,
    capacity: int,
    refill_per_second: float,
    failures_allowed: int,
    cost: int = 1,
    cached_version: tuple[str, str] | None = None,
) -> BucketState:
    """Spend `cost` tokens of the key's bucket (0 only looks), in one atomic Redis call that
    also refuses a client IP blocked for failed authentications, and, given the (Redis key,
    version) of a cached look-up of the key, says `stale` (spending nothing) if it changed."""
    keys = [_bucket_key(api_key_id), _auth_failure_key(client_ip)]
    if cached_version is not None:
        keys.append(cached_version[0])
    allowed, tokens, now_ms, blocked_ms, stale = await run_script(
        redis,
        _BUCKET_SCRIPT,
        keys,
        [
            str(capacity),
            repr(float(refill_per_second)),
            str(cost),
            str(failures_allowed),
            cached_version[1] if cached_version else "",
        ],
    )
    return BucketState(
        allowed=bool(allowed),
        capacity=capacity,
        refill_per_second=refill_per_second,
        tokens=float(tokens),
        now_ms=int(now_ms),
        ip_blocked_ms=int(blocked_ms),
        stale=bool(stale),
    )


async def record_auth_failure(redis: ScriptClient, client_ip: str, failures_allowed: int) -> int:
    """Count one failed authentication for `client_ip`; returns the ms the IP stays blocked
    (0 while it is still under the limit)."""
    failures, ttl_ms = await run_script(
        redis, _FAILURE_SCRIPT, [_auth_failure_key(client_ip)], [str(AUTH_FAILURE_WINDOW_SECONDS)]
    )
    return int(ttl_ms) if int(failures) > failures_allowed else 0


@dataclass(frozen=True)
class QuotaState:
    limit: int
    used: int
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


def month_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def next_month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    if moment.month == 12:
        return datetime(moment.year + 1, 1, 1, tzinfo=UTC)
    return datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)


class QuotaExceeded(Forbidden):
    def __init__(self, quota: QuotaState) -> None:
        super().__init__(USAGE_LIMIT_EXCEEDED)
        self.quota = quota
