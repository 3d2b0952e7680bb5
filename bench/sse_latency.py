"""Status streams (issue 14, figure 8): 1,000 open `GET /executions/:id/events` streams on one
web process (`flowgate serve`, granian), its memory (RSS of the server's processes) with them
open, and the time from a status change's commit to the event reaching its client, p50 and p99
over 200 changes made one every 20 ms. Needs DATABASE_URL (a database of its own: executions
are added) and REDIS_URL.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/sse_latency.py [--streams 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

os.environ.setdefault("FLOWGATE_LOG_LEVEL", "WARNING")
os.environ.setdefault("FLOWGATE_SECRET_KEY", "bench")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PUBLIC = "/api/v1/public"
WORKFLOW = "workflow_bfsi_marketing_template"
CHANGES = 200
PACE_SECONDS = 0.02


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pgid: int) -> float:
    """Resident memory of every process in the server's process group."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return round(total / 1024, 1)


async def make_key(database_url: str) -> str:
    from piccolo_conf import DB
    from web.domain import api_keys
    from web.domain.actors import Actor
    from web.domain.pool import start_pool

    await start_pool(DB, min_size=1, max_size=2)
    try:
        new = await api_keys.create_key(
            api_keys.KeySettings(
                name="sse bench",
                monthly_limit=100_000_000,
                rate_limit_burst=1_000_000,
                rate_limit_refill_per_second=100_000.0,
            ),
            actor=Actor.system(),
        )
    finally:
        await DB.close_connection_pool()
    return new.secret


def row() -> dict[str, str]:
    return {"customerId": "C1", "name": "Asha", "phone": "+918610500000", "city": "Pune"}


async def measure(url: str, secret: str, streams: int, database_url: str, pgid: int) -> Any:
    headers = {"Authorization": f"Bearer {secret}"}
    limits = httpx.Limits(max_connections=streams + 50, max_keepalive_connections=streams + 50)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        ids: list[str] = []
        for _ in range(streams):
            answer = await http.post(
                f"{PUBLIC}/agents/{WORKFLOW}/execute",
                json={"input": {"csvData": [row()]}},
                headers=headers,
            )
            answer.raise_for_status()
            ids.append(answer.json()["executionId"])
        rss_before = rss_mb(pgid)
        arrivals: dict[str, float] = {}
        opened = 0
        ready = asyncio.Event()

        async def follow(execution_id: str) -> None:
            nonlocal opened
            request = http.build_request(
                "GET",
                f"{PUBLIC}/executions/{execution_id}/events",
                headers={**headers, "Accept": "text/event-stream"},
            )
            response = await http.send(request, stream=True)
            events = 0
            async for line in response.aiter_lines():
                if line.startswith("event: status"):
                    events += 1
                    if events == 1:
                        opened += 1
                        if opened == streams:
                            ready.set()
                    else:
                        arrivals[execution_id] = time.perf_counter()
                        break
            await response.aclose()

        tasks = [asyncio.create_task(follow(execution_id)) for execution_id in ids]
        await asyncio.wait_for(ready.wait(), 120)
        await asyncio.sleep(1)
        rss_open = rss_mb(pgid)
        connection = await asyncpg.connect(database_url)
        committed: dict[str, float] = {}
        try:
            for execution_id in ids[:CHANGES]:
                # A status change as a worker's claim makes it: one committed UPDATE.
                await connection.execute(
                    "UPDATE execution SET status = 'running' WHERE id = $1", execution_id
                )
                committed[execution_id] = time.perf_counter()
                await asyncio.sleep(PACE_SECONDS)
            deadline = time.perf_counter() + 30
            while len(arrivals) < CHANGES and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await connection.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies = sorted((arrivals[i] - committed[i]) * 1000 for i in committed if i in arrivals)
    return {
        "streams": streams,
        "changes": CHANGES,
        "received": len(latencies),
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2)
        if latencies
        else None,
        "rss_mb_idle": rss_before,
        "rss_mb_streams_open": rss_open,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    args = parser.parse_args()
    database_url = os.environ["DATABASE_URL"]
    secret = asyncio.run(make_key(database_url))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "serve", "--port", str(port)],
        env={**os.environ},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        result = asyncio.run(measure(url, secret, args.streams, database_url, server.pid))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
