"""Webhook latency (issue 7, figure 4): from the state change to a receiver on 127.0.0.1 getting
the request, p50 and p99 over 500 events, with one real worker process (`flowgate worker`).

The latency of an event is the receiver's clock when the request arrives minus the event's
`created_at`, written in the transaction of the state change it reports (same machine, same
clock). Needs DATABASE_URL (a database of its own; it is truncated) and REDIS_URL.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/webhook_latency.py
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ.setdefault("FLOWGATE_LOG_LEVEL", "WARNING")
os.environ.setdefault("FLOWGATE_SECRET_KEY", "bench")
os.environ["FLOWGATE_WEBHOOK_ALLOW_HTTP"] = "true"
os.environ["FLOWGATE_WEBHOOK_ALLOW_PRIVATE"] = "true"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from web.app import create_app  # noqa: E402
from web.domain import api_keys, queue  # noqa: E402
from web.domain.actors import Actor  # noqa: E402
from web.domain.pool import start_pool  # noqa: E402
from web.domain.tables import WebhookEvent  # noqa: E402

EVENTS = 500
# A steady stream of executions (two events each), paced to keep the one worker well below
# saturation: this figure is the latency of delivery, not of a queue building up (throughput
# is figure 5). `worker_busy` in the result is the share of the run the worker spent on CPU.
PACE_SECONDS = 0.05
PUBLIC = "/api/v1/public"


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                at = time.time()
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.arrivals[self.headers["webhook-id"]] = at
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main() -> dict[str, Any]:
    from piccolo_conf import DB

    await start_pool(DB, min_size=2, max_size=10)
    await DB.run_ddl(
        "TRUNCATE api_key, api_key_usage, execution, execution_row, sandbox_message, "
        "webhook_event, webhook_attempt RESTART IDENTITY CASCADE"
    )
    redis = queue.connect(os.environ["REDIS_URL"], 5.0)
    await redis.flushdb()
    receiver = Receiver()
    key = await api_keys.create_key(
        api_keys.KeySettings(
            name="latency", monthly_limit=10**9, rate_limit_burst=10**9,
            rate_limit_refill_per_second=10**6, webhook_url=receiver.url,
            webhook_events=["execution.started", "execution.pending_approval"],
        ),
        webhook_secret="whsec_bench",  # noqa: S106 (a benchmark's own throwaway secret)
        actor=Actor.system(),
    )  # fmt: skip
    worker = subprocess.Popen(
        [ROOT / ".venv" / "bin" / "flowgate", "worker"], env=os.environ, stderr=subprocess.DEVNULL
    )
    app = create_app()
    try:
        async with (
            app.lifespan(),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench"
            ) as client,
        ):
            await asyncio.sleep(1.0)  # the worker is up and polling
            begin = time.monotonic()
            startup_cpu_s = _cpu_seconds(worker.pid)
            rows = [{"customerId": "C1", "name": "John Doe", "phone": "+918610560986"}]
            for _ in range(EVENTS // 2):  # two events each: started, pending_approval
                await client.post(
                    f"{PUBLIC}/agents/workflow_bfsi_marketing_template/execute",
                    json={"input": {"csvData": rows}},
                    headers={"Authorization": f"Bearer {key.secret}"},
                )
                await asyncio.sleep(PACE_SECONDS)
        deadline = time.monotonic() + 60
        while len(receiver.arrivals) < EVENTS and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        run_s = time.monotonic() - begin
        worker_cpu_s = _cpu_seconds(worker.pid) - startup_cpu_s
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        receiver.server.shutdown()
    events = await WebhookEvent.select(WebhookEvent.id, WebhookEvent.created_at)
    latencies = sorted(
        (receiver.arrivals[str(e["id"])] - e["created_at"].astimezone(UTC).timestamp()) * 1000
        for e in events
        if str(e["id"]) in receiver.arrivals
    )
    await redis.aclose()
    await DB.close_connection_pool()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {
        "events": len(events),
        "delivered": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(latencies[-1], 1),
        # Near 1.0 the worker was saturated and the latencies are queueing, not delivery.
        "worker_busy": round(worker_cpu_s / run_s, 2),
        "run_s": round(run_s, 2),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
