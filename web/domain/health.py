"""Health of the two things flowgate cannot run without: PostgreSQL and Redis."""

from __future__ import annotations

import asyncio

import msgspec
from redis.asyncio import Redis

from web.domain.tables import Execution

TIMEOUT_SECONDS = 1.0


async def _database() -> bool:
    try:
        await asyncio.wait_for(Execution.raw("SELECT 1"), TIMEOUT_SECONDS)
    except Exception:
        return False
    return True


async def _redis(redis: Redis) -> bool:
    try:
        await asyncio.wait_for(redis.ping(), TIMEOUT_SECONDS)
    except Exception:
        return False
    return True


class Health(msgspec.Struct, frozen=True):
    """The body of `GET /health`: `status` is "ok" when both are reachable, else "degraded"."""

    status: str
    database: bool
    redis: bool


async def check(redis: Redis) -> Health:
    database, queue = await asyncio.gather(_database(), _redis(redis))
    return Health(status="ok" if database and queue else "degraded", database=database, redis=queue)
