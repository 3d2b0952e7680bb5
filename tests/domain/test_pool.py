"""The shared pool skips asyncpg's reset query on release (web.domain.pool) but still never
hands out a connection inside someone else's transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

from piccolo_conf import DB


@asynccontextmanager
async def every_pooled_connection() -> AsyncIterator[dict[int, Any]]:
    """Every connection of the pool at once, by backend pid (the one just released included)."""
    assert DB.pool is not None
    connections = [await DB.pool.acquire() for _ in range(DB.pool.get_size())]
    try:
        yield {await c.fetchval("SELECT pg_backend_pid()"): c for c in connections}
    finally:
        for connection in connections:
            await DB.pool.release(connection)


async def test_a_transaction_left_open_is_rolled_back_on_release(db_pool: None) -> None:
    assert DB.pool is not None
    name = f"pool-test-{uuid4()}"
    async with DB.pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(
            "INSERT INTO workflow (id, name, description, active, required_fields, steps, "
            "created_at, updated_at) VALUES ($1, $1, '', true, '{}', '[]', now(), now())",
            name,
        )
        backend = await connection.fetchval("SELECT pg_backend_pid()")
    # Released without commit. Every pooled connection, this one included, sees nothing of it
    # and is outside any transaction.
    async with every_pooled_connection() as connections:
        assert backend in connections
        for connection in connections.values():
            assert not connection.is_in_transaction()
            assert (
                await connection.fetchval("SELECT count(*) FROM workflow WHERE id = $1", name) == 0
            )


async def test_release_sends_no_reset_query_so_session_settings_would_survive(
    db_pool: None,
) -> None:
    """The other side of skipping the reset query: a session setting outlives its checkout.
    Hence the rule in web/domain/pool.py: flowgate code never sets one."""
    assert DB.pool is not None
    async with DB.pool.acquire() as connection:
        await connection.execute("SET application_name = 'pool-test'")
        backend = await connection.fetchval("SELECT pg_backend_pid()")
    async with every_pooled_connection() as connections:
        try:
            setting = "SELECT current_setting('application_name')"
            assert await connections[backend].fetchval(setting) == "pool-test"
        finally:
            for connection in connections.values():
                await connection.execute("RESET application_name")
