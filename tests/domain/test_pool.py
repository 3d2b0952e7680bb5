"""The shared pool skips asyncpg's reset query on release (web.domain.pool) but still never
hands out a connection inside someone else's transaction."""

from __future__ import annotations

from uuid import uuid4

from piccolo_conf import DB


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
    connections = [await DB.pool.acquire() for _ in range(DB.pool.get_size())]
    try:
        pids = {await c.fetchval("SELECT pg_backend_pid()") for c in connections}
        assert backend in pids
        for connection in connections:
            assert not connection.is_in_transaction()
            assert (
                await connection.fetchval("SELECT count(*) FROM workflow WHERE id = $1", name) == 0
            )
    finally:
        for connection in connections:
            await DB.pool.release(connection)


async def test_release_sends_no_reset_query_so_session_settings_would_survive(
    db_pool: None,
) -> None:
    """The other side of skipping the reset query: a session setting outlives its checkout.
    Hence the rule in web/domain/pool.py: flowgate code never sets one."""
    assert DB.pool is not None
    async with DB.pool.acquire() as connection:
        await connection.execute("SET application_name = 'pool-test'")
        backend = await connection.fetchval("SELECT pg_backend_pid()")
    connections = [await DB.pool.acquire() for _ in range(DB.pool.get_size())]
    try:
        names = {
            await c.fetchval("SELECT pg_backend_pid()"): await c.fetchval(
                "SELECT current_setting('application_name')"
            )
            for c in connections
        }
        assert names[backend] == "pool-test"
    finally:
        for connection in connections:
            await connection.execute("RESET application_name")
            await DB.pool.release(connection)
