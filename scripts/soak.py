"""`make soak`: 60 s of mixed traffic (execute, status, results, approve) from 64 concurrent
clients against 2 web servers (`flowgate serve`, one granian worker each) and 2 workers, on a
database and Redis DB of its own.

Passes when there was no 5xx, every accepted execution reached a final state, and no process
grew its memory (RSS; a web server's counts its worker process) by 20 % or more after the
warm-up. Prints the figures; exits 1 if any
criterion fails. Settings: SOAK_SECONDS (60), SOAK_CLIENTS (64), SOAK_WARMUP_SECONDS (10).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
SECONDS = int(os.environ.get("SOAK_SECONDS", "60"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "64"))
WARMUP = int(os.environ.get("SOAK_WARMUP_SECONDS", "10"))
WORKFLOW = "workflow_bfsi_marketing_template"
FINAL = {"completed", "failed", "cancelled"}


def _with_path(url: str, path: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, path, p.query, p.fragment))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _own_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _rss_kib(pid: int) -> int:
    """RSS of a process and its descendants: granian serves from a child process."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += _own_rss_kib(current)
            todo += _children(current)
        except FileNotFoundError:  # gone meanwhile
            continue
    return total


def _rows(count: int) -> list[dict[str, str]]:
    return [
        {"customerId": f"CUST{i:03d}", "name": "John Doe", "phone": f"+9186105{i:05d}",
         "city": "Mumbai", "income_bracket": "75000-100000", "credit_score": "750"}
        for i in range(count)
    ]  # fmt: skip


async def _prepare(env: dict[str, str]) -> str:
    admin = await asyncpg.connect(_with_path(os.environ["DATABASE_URL"], "/postgres"))
    await admin.execute('DROP DATABASE IF EXISTS "flowgate_soak" WITH (FORCE)')
    await admin.execute('CREATE DATABASE "flowgate_soak"')
    await admin.close()
    subprocess.run([BIN / "flowgate", "migrate"], env=env, check=True, capture_output=True)
    created = subprocess.run(
        [BIN / "flowgate", "keys", "create", "--name", "soak", "--monthly-limit", "1000000000",
         "--json"], env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    secret: str = json.loads(created.stdout)["key"]
    db = await asyncpg.connect(env["DATABASE_URL"])
    await db.execute(
        "UPDATE api_key SET rate_limit_burst = 1000000000, rate_limit_refill_per_second = 1e6"
    )
    await db.close()
    return secret


class Traffic:
    def __init__(self, bases: list[str], secret: str) -> None:
        self.bases = bases
        self.headers = {"Authorization": f"Bearer {secret}"}
        self.codes: Counter[int] = Counter()
        self.server_errors: list[str] = []
        self.accepted: list[str] = []
        self.requests = 0

    async def call(
        self, client: httpx.AsyncClient, method: str, path: str, **kw: object
    ) -> httpx.Response:
        base = random.choice(self.bases)
        response = await client.request(
            method, f"{base}/api/v1/public{path}", headers=self.headers, **kw
        )  # type: ignore[arg-type]
        self.requests += 1
        self.codes[response.status_code] += 1
        if response.status_code >= 500:
            self.server_errors.append(
                f"{method} {path} -> {response.status_code} {response.text[:200]}"
            )
        return response

    async def client_loop(self, deadline: float) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while time.monotonic() < deadline:
                started = await self.call(
                    client,
                    "POST",
                    f"/agents/{WORKFLOW}/execute",
                    json={"input": {"csvData": _rows(random.randint(1, 20))}},
                )
                if started.status_code != 202:
                    continue
                execution_id = started.json()["executionId"]
                self.accepted.append(execution_id)
                while time.monotonic() < deadline:
                    status = (
                        await self.call(client, "GET", f"/executions/{execution_id}/status")
                    ).json()
                    if status.get("status") == "pending_approval":
                        action = "approve" if random.random() < 0.85 else "reject"
                        await self.call(
                            client,
                            "POST",
                            f"/executions/{execution_id}/{action}",
                            json={"comment": "soak"},
                        )
                    elif status.get("status") in FINAL:
                        await self.call(client, "GET", f"/executions/{execution_id}/results")
                        break
                    await asyncio.sleep(0.2)


async def main() -> int:
    env = {
        **os.environ,
        "DATABASE_URL": _with_path(os.environ["DATABASE_URL"], "/flowgate_soak"),
        "REDIS_URL": _with_path(os.environ["REDIS_URL"], "/10"),
        "FLOWGATE_SECRET_KEY": "soak",
        "FLOWGATE_LOG_LEVEL": "WARNING",
    }
    secret = await _prepare(env)
    redis_flush = subprocess.run(
        [
            BIN / "python",
            "-c",
            (
                "import asyncio, redis.asyncio as r, os; "
                "asyncio.run(r.from_url(os.environ['REDIS_URL']).flushdb())"
            ),
        ],
        env=env,
        check=True,
    )
    assert redis_flush.returncode == 0
    ports = [_free_port(), _free_port()]
    processes = {
        f"web:{port}": subprocess.Popen([BIN / "flowgate", "serve", "--port", str(port)], env=env)
        for port in ports
    }
    for index in range(2):
        processes[f"worker{index + 1}"] = subprocess.Popen(
            [BIN / "flowgate", "worker"], env=env, stderr=subprocess.DEVNULL
        )
    try:
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        for base in bases:
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        traffic = Traffic(bases, secret)
        start = time.monotonic()
        deadline = start + SECONDS
        loops = [asyncio.create_task(traffic.client_loop(deadline)) for _ in range(CLIENTS)]
        await asyncio.sleep(WARMUP)
        after_warmup = {name: _rss_kib(p.pid) for name, p in processes.items()}
        await asyncio.gather(*loops)
        elapsed = time.monotonic() - start
        at_end = {name: _rss_kib(p.pid) for name, p in processes.items()}

        db = await asyncpg.connect(env["DATABASE_URL"])
        settle_deadline = time.monotonic() + 90
        while True:
            unfinished = await db.fetchval(
                "SELECT count(*) FROM execution "
                "WHERE status NOT IN ('completed', 'failed', 'cancelled', 'pending_approval')"
            )
            waiting = await db.fetch("SELECT id FROM execution WHERE status = 'pending_approval'")
            if waiting:  # clients stopped mid-way: finish their approvals
                async with httpx.AsyncClient() as client:
                    for row in waiting:
                        await traffic.call(
                            client, "POST", f"/executions/{row['id']}/approve", json={}
                        )
            if not unfinished and not waiting:
                break
            if time.monotonic() > settle_deadline:
                break
            await asyncio.sleep(1)
        statuses = dict(await db.fetch("SELECT status, count(*) FROM execution GROUP BY status"))
        await db.close()
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    accepted = len(traffic.accepted)
    final = sum(v for k, v in statuses.items() if k in FINAL)
    growth = {n: (at_end[n] - after_warmup[n]) / after_warmup[n] * 100 for n in processes}
    print(f"\nsoak: {SECONDS} s, {CLIENTS} clients, 2 web processes, 2 workers")
    print(f"  requests          {traffic.requests} ({traffic.requests / elapsed:.0f}/s)")
    print(f"  status codes      {dict(sorted(traffic.codes.items()))}")
    print(f"  executions        {accepted} accepted, {final} final {statuses}")
    for name in processes:
        print(
            f"  RSS {name:12} {after_warmup[name] / 1024:7.1f} MiB after warm-up -> "
            f"{at_end[name] / 1024:7.1f} MiB at the end ({growth[name]:+.1f} %)"
        )
    failures = []
    if traffic.server_errors:
        failures.append(
            f"{len(traffic.server_errors)} server errors, e.g. {traffic.server_errors[:3]}"
        )
    if final != accepted or statuses.keys() - FINAL:
        failures.append(f"not every accepted execution is final: {statuses}")
    if any(g >= 20 for g in growth.values()):
        failures.append(f"RSS grew 20 % or more: {growth}")
    print("  result            " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
