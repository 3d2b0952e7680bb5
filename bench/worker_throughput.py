"""Worker throughput: rows per second through generate -> compliance -> send (sandbox) with one
worker, for 50 executions of 100 rows approved through the API (issue 7, figure 3).

Runs in one process: the public API under an ASGI client to start and approve, and one real arq
worker (burst mode) to run. Needs DATABASE_URL (a database of its own; it is truncated) and
REDIS_URL; `bench/run.py` passes its bench database. `--profile` writes a pyinstrument report of
the worker phases to bench/results/worker_profile.txt.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/worker_throughput.py [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FLOWGATE_LOG_LEVEL", "WARNING")
os.environ.setdefault("FLOWGATE_SECRET_KEY", "bench")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from arq.worker import Worker

from web.app import create_app
from web.domain import api_keys, queue
from web.domain.actors import Actor
from web.domain.pool import start_pool
from worker.settings import functions, shutdown, startup

EXECUTIONS = 50
ROWS = 100
PUBLIC = "/api/v1/public"


def _rows() -> list[dict[str, str]]:
    return [
        {"customerId": f"CUST{i:03d}", "name": "John Doe", "phone": f"+9186105{i:05d}",
         "city": "Mumbai", "income_bracket": "75000-100000", "credit_score": "750"}
        for i in range(ROWS)
    ]  # fmt: skip


async def _drain(redis: Any) -> float:
    started = time.perf_counter()
    worker = Worker(
        functions=functions(),
        redis_pool=redis,
        burst=True,
        poll_delay=0,
        handle_signals=False,
        on_startup=startup,
        on_shutdown=shutdown,
        max_jobs=20,
    )
    try:
        await worker.main()
    finally:
        await shutdown(worker.ctx)  # not worker.close(): that would close our Redis pool
    return time.perf_counter() - started


async def main(profile: bool) -> dict[str, Any]:
    from piccolo_conf import DB

    await start_pool(DB, min_size=2, max_size=20)
    await DB.run_ddl(
        "TRUNCATE api_key, api_key_usage, execution, execution_row, sandbox_message, "
        "webhook_event, webhook_attempt RESTART IDENTITY CASCADE"
    )
    redis = queue.connect(os.environ["REDIS_URL"], 5.0)
    await redis.flushdb()
    key = await api_keys.create_key(
        api_keys.KeySettings(
            name="throughput", monthly_limit=10**9, rate_limit_burst=10**9,
            rate_limit_refill_per_second=10**6,
        ),
        actor=Actor.system(),
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {key.secret}"}
    app = create_app()
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="enabled")
    async with (
        app.lifespan(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench"
        ) as client,
    ):
        ids = []
        for _ in range(EXECUTIONS):
            response = await client.post(
                f"{PUBLIC}/agents/workflow_bfsi_marketing_template/execute",
                json={"input": {"csvData": _rows()}},
                headers=headers,
            )
            ids.append(response.json()["executionId"])
        if profiler:
            profiler.start()
        first = await _drain(redis)  # generate + compliance, then pause for approval
        if profiler:
            profiler.stop()
        for execution_id in ids:
            approved = await client.post(
                f"{PUBLIC}/executions/{execution_id}/approve", headers=headers
            )
            assert approved.status_code == 200, approved.text
        if profiler:
            profiler.start()
        second = await _drain(redis)  # send
        if profiler:
            profiler.stop()
        done = 0
        for execution_id in ids:
            status = (
                await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=headers)
            ).json()
            done += status["status"] == "completed"
    await redis.aclose()
    await DB.close_connection_pool()
    total_rows = EXECUTIONS * ROWS
    result = {
        "executions": EXECUTIONS,
        "rows": total_rows,
        "completed": done,
        "generate_and_check_s": round(first, 3),
        "send_s": round(second, 3),
        "rows_per_s": round(total_rows / (first + second), 1),
    }
    if profiler:
        out = Path(__file__).resolve().parent / "results" / "worker_profile.txt"
        out.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        result["profile"] = str(out)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", action="store_true")
    print(json.dumps(asyncio.run(main(parser.parse_args().profile))))
