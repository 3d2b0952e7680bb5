"""Provider limits shared by every worker: token buckets in Redis, one per provider account and
limit (an LLM's requests and tokens per minute, a WhatsApp number's messages per second).

Each bucket is a hash {tokens, ts, blocked} changed only by one atomic Lua script, with Redis'
own clock (TIME), like the API's limiter (web.domain.limits). A caller *takes* its cost before
a call and is told how long to wait first: the bucket may go into debt, so callers queue in
the order they asked and each sleeps exactly until its turn (nothing polls). A take whose wait
would be longer than the caller can wait (its job's deadline) takes nothing.

The provider's own word slows everyone: a 429 *blocks* the bucket (empty, its debts forgiven,
refilling only from `now + Retry-After`) and starts a new *epoch*: a turn given before it is
void, and its caller takes a new one once it wakes, so the callers queued before the 429 line
up again at the bucket's rate instead of all calling at the end of the block; the
`x-ratelimit-remaining-*` headers of an LLM server *clamp* it (never more tokens than the server
says are left; none left blocks it until the server's reset). A token estimate is *adjusted*
once the answer reports the real usage.

Bucket keys never hold a secret: an LLM account is named by a SHA-256 of its base_url and key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis

from web.domain.script_client import Script, run_script

KEY_PREFIX = "flowgate:provider-limit:"

# KEYS: the buckets. ARGV[1] the operation, ARGV[2] the most a take may wait (ms), then four per
# bucket: refill per ms, capacity, a value (take: the cost; block: ms; clamp: tokens left;
# adjust: tokens to give back, negative to take more) and clamp's ms until the server's reset.
# Returns {1 if done, the wait in ms as a string, the epoch (the sum over the buckets: a block
# raises it)}; `blocked` only reads: the ms left blocked, and the epoch.
_SCRIPT = Script("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local op = ARGV[1]
local states = {}
local wait = 0
local epochs = 0
for i = 1, #KEYS do
  local base = 2 + (i - 1) * 4
  local rate = tonumber(ARGV[base + 1])
  local capacity = tonumber(ARGV[base + 2])
  local value = tonumber(ARGV[base + 3])
  local reset = tonumber(ARGV[base + 4])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts', 'blocked', 'epoch')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  local blocked = tonumber(state[3]) or 0
  local epoch = tonumber(state[4]) or 0
  if tokens == nil or ts == nil then
    tokens = capacity
    ts = now
  end
  if now > ts then
    tokens = math.min(capacity, tokens + (now - ts) * rate)
    ts = now
  end
  if op == 'take' then
    wait = math.max(wait, math.max(ts - now, blocked - now, 0)
                          + math.max(value - tokens, 0) / rate)
    tokens = tokens - value
  elseif op == 'block' then
    tokens = 0
    ts = math.max(ts, now + value)
    blocked = math.max(blocked, now + value)
    epoch = epoch + 1
  elseif op == 'clamp' then
    tokens = math.min(tokens, value)
    if value < 1 then
      ts = math.max(ts, now + reset)
      blocked = math.max(blocked, now + reset)
    end
  elseif op == 'adjust' then
    tokens = math.min(capacity, tokens + value)
  elseif op == 'blocked' then
    wait = math.max(wait, blocked - now)
  end
  states[i] = {tokens, ts, blocked, rate, capacity, epoch}
  epochs = epochs + epoch
end
if op == 'blocked' then
  return {1, tostring(math.max(wait, 0)), epochs}
end
if op == 'take' and wait > tonumber(ARGV[2]) then
  return {0, tostring(wait), epochs}
end
for i = 1, #KEYS do
  local s = states[i]
  redis.call('HSET', KEYS[i], 'tokens', tostring(s[1]), 'ts', tostring(s[2]),
             'blocked', tostring(s[3]), 'epoch', s[6])
  local ttl = math.max(s[2] - now, s[3] - now, 0) + math.max(s[5] - s[1], 0) / s[4] + 60000
  redis.call('PEXPIRE', KEYS[i], math.ceil(ttl))
end
return {1, tostring(wait), epochs}
""")


@dataclass(frozen=True)
class Bucket:
    """One shared limit: `per_second` tokens come back each second, up to `capacity`."""

    key: str
    per_second: float
    capacity: float


def account_key(kind: str, *identity: str) -> str:
    """The key stem of one provider account: `flowgate:provider-limit:<kind>:<sha256 hex>`, the
    hash over what names the account (a base_url and an API key), never the key itself."""
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:40]
    return f"{KEY_PREFIX}{kind}:{digest}"


async def _run(
    redis: Redis,
    op: str,
    buckets: list[Bucket],
    values: list[float],
    *,
    max_wait_ms: float = 0.0,
    reset_ms: float = 0.0,
) -> tuple[bool, float, int]:
    args: list[str | bytes] = [op, repr(max_wait_ms)]
    for bucket, value in zip(buckets, values, strict=True):
        args += [
            repr(bucket.per_second / 1000.0),
            repr(bucket.capacity),
            repr(value),
            repr(reset_ms),
        ]
    done, wait, epoch = await run_script(redis, _SCRIPT, [b.key for b in buckets], args)
    return bool(done), float(wait) / 1000.0, int(epoch)


@dataclass(frozen=True)
class Turn:
    """A turn given: call after `wait` seconds, if the buckets are still at `epoch` then."""

    wait: float
    epoch: int


async def take(
    redis: Redis, buckets: list[Bucket], costs: list[float], max_wait_seconds: float
) -> Turn | None:
    """Take `costs` from `buckets` together: the turn (the seconds to wait before the call), or
    None (and nothing taken) when that wait would be longer than `max_wait_seconds`."""
    done, wait, epoch = await _run(
        redis, "take", buckets, costs, max_wait_ms=max_wait_seconds * 1000
    )
    return Turn(wait, epoch) if done else None


async def blocked_for(redis: Redis, buckets: list[Bucket]) -> Turn:
    """How long the buckets are still blocked by a provider's refusal (0 when not), and their
    epoch: a turn of an earlier epoch is void."""
    _, wait, epoch = await _run(redis, "blocked", buckets, [0.0] * len(buckets))
    return Turn(wait, epoch)


async def block(redis: Redis, buckets: list[Bucket], seconds: float) -> None:
    """The provider refused (429): nobody calls for `seconds`, then the buckets refill from
    empty."""
    await _run(redis, "block", buckets, [seconds * 1000.0] * len(buckets))


async def clamp(redis: Redis, bucket: Bucket, remaining: float, reset_seconds: float) -> None:
    """The provider says `remaining` calls (or tokens) are left, full again in `reset_seconds`."""
    await _run(redis, "clamp", [bucket], [remaining], reset_ms=reset_seconds * 1000.0)


async def adjust(redis: Redis, bucket: Bucket, tokens: float) -> None:
    """Give back `tokens` taken on an estimate (negative: take what the estimate missed)."""
    await _run(redis, "adjust", [bucket], [tokens])
