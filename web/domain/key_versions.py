"""Which cached look-ups of an API key are stale: a version per key secret (its SHA-256 digest)
in Redis, raised after every change of the key (revoke, edit, rotation), that every web
process compares on each request in the rate limiter's own Redis call (web.domain.limits), so a
change takes effect on the very next request everywhere without another round trip.

Why a version per digest, read before the database: a process caches what it read together
with the version it saw *before* reading, so a change committed meanwhile (its raise comes
after its commit) can only make the cached version older, never newer, than the data: the next
request sees the difference and reads again. A version lost with Redis reads as "0": a process
that cached "3" reads again; one that cached "0" keeps its entry until the cache's own lifetime
(FLOWGATE_KEY_CACHE_SECONDS) ends, the backstop for a raise that never happened (Redis down
at the moment of the change). Imports only web.domain.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from web.domain.script_client import ScriptClient

_PREFIX = "flowgate:key_version:"
UNSET = "0"


def redis_key(digest: str) -> str:
    return _PREFIX + digest


def _execute(client: ScriptClient | Redis) -> Callable[..., Awaitable[Any]]:
    return client.execute if isinstance(client, ScriptClient) else client.execute_command


async def read(client: ScriptClient | Redis, digest: str) -> str:
    """The secret's current version ("0" when it never changed, or Redis lost it)."""
    value = await _execute(client)("GET", redis_key(digest))
    if value is None:
        return UNSET
    return value.decode() if isinstance(value, bytes) else str(value)


async def raise_versions(client: ScriptClient | Redis, digests: list[str]) -> None:
    """After the change's commit: every process that cached these secrets reads them again."""
    for digest in digests:
        await _execute(client)("INCR", redis_key(digest))
