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

from typing import Any

from piccolo.engine.postgres import PostgresEngine


async def _nothing_left_to_reset(connection: Any) -> None:
    """asyncpg has already rolled back any open transaction (Connection._reset)."""


async def start_pool(engine: PostgresEngine, *, min_size: int, max_size: int) -> None:
    await engine.start_connection_pool(
        min_size=min_size, max_size=max_size, reset=_nothing_left_to_reset
    )
