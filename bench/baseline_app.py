"""The baselines of `make bench`: a minimal Litestar app doing only the irreducible work of the
two public endpoints the benchmark measures, so flowgate's figures can be read as a ratio of
"what this machine can do at all" with the same framework and the same server.

- `GET /executions/{id}/status`: one asyncpg `SELECT` by primary key on flowgate's `execution`
  table, answered as a small JSON object (no auth, no limiter, no ORM).
- `POST /agents/{workflow_id}/execute`: parse the JSON body, then in one transaction one
  `INSERT` of the whole body into `bench_execution` and one checked counter `UPDATE` on
  `bench_counter` (the quota), then one arq `enqueue_job`. Answers 202 like flowgate.

Nothing here imports flowgate. The app reads DATABASE_URL and REDIS_URL (bench/run.py points
them at the benchmark's own database and Redis DB) and creates its two tables when missing.

    DATABASE_URL=… REDIS_URL=… .venv/bin/uvicorn --app-dir bench baseline_app:create_app --factory
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import msgspec
from arq.connections import ArqRedis
from litestar import Litestar, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException

SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_execution (
    id uuid PRIMARY KEY,
    body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS bench_counter (id integer PRIMARY KEY, used bigint NOT NULL);
INSERT INTO bench_counter (id, used) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
"""

COUNTER_LIMIT = 1_000_000_000
MAX_ROWS = 100


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@asynccontextmanager
async def resources(app: Litestar) -> AsyncIterator[None]:
    # The same pool sizes as flowgate's web app (web/app.py).
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=2, max_size=20)
    assert pool is not None
    redis = ArqRedis.from_url(os.environ["REDIS_URL"])
    try:
        async with pool.acquire() as connection:
            await connection.execute(SCHEMA)
        app.state.pool = pool
        app.state.redis = redis
        yield
    finally:
        await redis.aclose()
        await pool.close()


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/executions/{execution_id:uuid}/status")
async def status(state: State, execution_id: UUID) -> dict[str, Any]:
    pool: asyncpg.Pool = state.pool
    row = await pool.fetchrow(
        "SELECT id, status, started_at, completed_at, error, approval_status "
        "FROM execution WHERE id = $1",
        execution_id,
    )
    if row is None:
        raise NotFoundException("Execution not found")
    return {
        "id": str(row["id"]),
        "status": row["status"],
        "startedAt": _iso(row["started_at"]),
        "completedAt": _iso(row["completed_at"]),
        "error": row["error"],
        "approvalStatus": row["approval_status"],
    }


@post("/agents/{workflow_id:str}/execute", status_code=202)
async def execute(state: State, workflow_id: str, data: dict[str, Any]) -> dict[str, Any]:
    rows = (data.get("input") or {}).get("csvData")
    if not isinstance(rows, list) or not rows:
        raise HTTPException(status_code=400, detail="input.csvData must be a non-empty list")
    body = msgspec.json.encode({"workflow": workflow_id, "rows": rows[:MAX_ROWS]}).decode()
    execution_id = uuid4()
    pool: asyncpg.Pool = state.pool
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "INSERT INTO bench_execution (id, body) VALUES ($1, $2::jsonb)", execution_id, body
        )
        # The quota: checked and counted in one statement, last so its row lock is short.
        used = await connection.fetchval(
            "UPDATE bench_counter SET used = used + 1 WHERE id = 1 AND used < $1 RETURNING used",
            COUNTER_LIMIT,
        )
        if used is None:
            raise HTTPException(status_code=403, detail="usage limit exceeded")
    redis: ArqRedis = state.redis
    # Nothing consumes this queue: bench/run.py flushes the Redis DB between runs.
    await redis.enqueue_job("bench_run", str(execution_id), _job_id=f"bench_run:{execution_id}:0")
    return {"executionId": str(execution_id), "status": "pending", "message": "queued"}


def create_app() -> Litestar:
    return Litestar(route_handlers=[health, status, execute], lifespan=[resources])
