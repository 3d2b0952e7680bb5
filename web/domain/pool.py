"""The asyncpg pool behind Piccolo, opened the same way by the web app, the worker and tests.

By default asyncpg sends a reset query (`SELECT pg_advisory_unlock_all(); CLOSE ALL;
UNLISTEN *; RESET ALL;`) every time a connection goes back to the pool: one more round trip
for every request, about a fifth of a status call's CPU (bench/README.md). flowgate never
leaves session state on a pooled connection: no SET, no LISTEN, no advisory locks, no WITH
HOLD cursors. So release keeps asyncpg's own cleanup, which needs no round trip (an open
transaction is still rolled back, listeners removed), and skips the query. Code that starts
to use session state must reset it itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from piccolo.engine.postgres import PostgresEngine

from web.domain.tables import Execution


async def _nothing_left_to_reset(connection: Any) -> None:
    """asyncpg has already rolled back any open transaction (Connection._reset)."""


async def start_pool(engine: PostgresEngine, *, min_size: int, max_size: int) -> None:
    await engine.start_connection_pool(
        min_size=min_size, max_size=max_size, reset=_nothing_left_to_reset
    )


# A pooled connection or one of its own: the same methods.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


def engine() -> PostgresEngine:
    """Piccolo's engine (piccolo_conf.DB): its pool, and `engine().transaction()`."""
    return cast(PostgresEngine, Execution._meta.db)


@asynccontextmanager
async def connection() -> AsyncIterator[Connection]:
    """A connection for plain SQL: from the pool, or (scripts, the CLI: no pool) one of its own.
    The public API's hot paths use this instead of the query builder, which cost about half
    of their CPU (bench/README.md)."""
    db = engine()
    if db.pool is not None:
        async with db.pool.acquire() as pooled:
            yield pooled
    else:
        own: asyncpg.Connection[asyncpg.Record] = await db.get_new_connection()
        try:
            yield own
        finally:
            await own.close()


async def fetch_row(sql: str, *args: Any) -> dict[str, Any] | None:
    async with connection() as con:
        record = await con.fetchrow(sql, *args)
    return None if record is None else dict(record)


async def fetch_rows(sql: str, *args: Any) -> list[dict[str, Any]]:
    async with connection() as con:
        records = await con.fetch(sql, *args)
    return [dict(record) for record in records]


async def execute(sql: str, *args: Any) -> None:
    """Run one statement that returns nothing (an UPDATE of many rows, say)."""
    async with connection() as con:
        await con.execute(sql, *args)
