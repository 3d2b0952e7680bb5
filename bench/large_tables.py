"""Figure 9: the pages people use, on a database of 100,000 executions and 10,000,000 rows
against the same on an empty database, in the same run (issue #17, section 4).

    make bench BENCH_ARGS="--only large"        # just this figure (what a developer runs)
    DATABASE_URL=… REDIS_URL=… .venv/bin/python bench/large_tables.py

The large database (`flowgate_bench_large`, `--large-database`) is kept between runs: it is
seeded again (bench/seed_large.py, about 4 to 5 minutes here) only when its marker says another
seed version or migration level. The "empty" one (`flowgate_bench_empty`) is recreated,
migrated and seeded with the same seed at 400 executions every run (so each page shows as many
entries on both: only the tables' size differs). Each gets one server process (uvicorn, as figure 1's), a key opened up as
figure 1's, and a signed-in admin whose session cookie wrk sends. Every endpoint is measured
on the empty database and on the large one, `--repeat` times each (BENCH_REPEAT, 2), in
alternating order as figures 1-3 are, keeping each side's fastest; the ratio is large / empty
of requests per second (target >= 0.8), with the p50 and p99 of both. What the executes
add to the large database is deleted at the end (the key that made them, cascading).

Prints one JSON line (the last line of output) for bench/run.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  (bench/run.py: servers, wrk, measurements)
import seed_large  # noqa: E402

TARGET = 0.8
ADMIN_EMAIL = "bench-large-admin@example.com"
ADMIN_PASSWORD = "bench-large-password-1"


def log(message: str) -> None:
    bench.log(f"large: {message}")


async def _sql(url: str, *statements: str) -> list[Any]:
    connection = await asyncpg.connect(url)
    try:
        return [await connection.fetch(s) for s in statements]
    finally:
        await connection.close()


class Side:
    """One database, its server, its key and its signed-in admin."""

    def __init__(self, name: str, db_url: str, redis_url: str, tmp: Path) -> None:
        self.name = name
        self.db_url = db_url
        self.env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "PICCOLO_CONF": "piccolo_conf",
            "FLOWGATE_SIGN_IN_ATTEMPTS_PER_MINUTE": "100000",
            "FLOWGATE_AUTH_FAILURES_PER_MINUTE": "100000",
        }
        port = bench.free_port()
        cmd = [str(bench.BIN / "uvicorn"), "web.app:create_app", "--factory", "--host"]
        cmd += ["127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
        self.server = bench.Server(f"uvicorn-{name}", cmd, self.env, tmp / f"{name}.log", port)
        self.key = ""
        self.key_id = ""
        self.cookie = ""

    def prepare(self) -> None:
        created = json.loads(
            bench.flowgate(self.env, "keys", "create", "--name", "bench-run", "--json")
        )
        self.key, self.key_id = created["key"], created["id"]
        asyncio.run(bench.open_up_keys(self.db_url))
        asyncio.run(_sql(self.db_url, f"DELETE FROM dashboard_user WHERE email = '{ADMIN_EMAIL}'"))
        result = bench.run(
            [str(bench.BIN / "flowgate"), "users", "create", "--email", ADMIN_EMAIL, "--role",
             "admin", "--password-stdin"],
            input=ADMIN_PASSWORD + "\n", capture_output=True, env=self.env, cwd=bench.ROOT,
        )  # fmt: skip
        if result.returncode != 0:
            raise bench.BenchError(f"users create: {result.stdout}{result.stderr}")

    def sign_in(self, client: httpx.Client) -> None:
        base = self.server.base
        client.cookies.clear()
        client.get(base + "/dashboard/login")
        token = client.cookies.get("flowgate_csrf") or ""
        answer = client.post(
            base + "/dashboard/login",
            data={"_csrf_token": token, "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        )
        if answer.status_code != 303:
            raise bench.BenchError(f"{self.name}: sign-in answered {answer.status_code}")
        self.cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        client.cookies.clear()

    def cleanup(self) -> None:
        if self.key_id:
            asyncio.run(
                _sql(
                    self.db_url,
                    f"DELETE FROM api_key_usage WHERE api_key = '{self.key_id}'",
                    f"DELETE FROM execution WHERE api_key = '{self.key_id}'",
                    f"DELETE FROM api_key WHERE id = '{self.key_id}'",
                )
            )


class QueueOnly:
    """What figure 9's wrk flushes before each measurement: the arq queue the executes fill,
    never the sessions the dashboard's cookies point at."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def flushdb(self) -> None:
        keys = list(self.redis.scan_iter(match="arq:*", count=1000))
        for start in range(0, len(keys), 500):
            self.redis.delete(*keys[start : start + 500])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION", "10")))
    p.add_argument("--warmup", type=int, default=int(os.environ.get("BENCH_WARMUP", "2")))
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT", "2")))
    p.add_argument("--large-database", default="flowgate_bench_large")
    p.add_argument("--empty-database", default="flowgate_bench_empty")
    p.add_argument("--executions", type=int, default=100_000)
    p.add_argument("--rows", type=int, default=100)
    p.add_argument("--small-executions", type=int, default=400)
    p.add_argument("--redis-db", type=int, default=14)
    args = p.parse_args(argv)
    base_db, base_redis = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if not base_db or not base_redis:
        raise bench.BenchError("DATABASE_URL and REDIS_URL must be set: run `make bench`")
    for name in (args.large_database, args.empty_database):
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or urlsplit(base_db).path[1:] == name:
            raise bench.BenchError(f"not a benchmark database name: {name!r}")
    admin = bench.with_path(base_db, "/postgres")
    large_url = bench.with_path(base_db, "/" + args.large_database)
    empty_url = bench.with_path(base_db, "/" + args.empty_database)
    redis_url = bench.with_path(base_redis, f"/{args.redis_db}")

    started = time.monotonic()
    fresh, marker = asyncio.run(
        seed_large.ensure_seeded(
            admin, large_url, args.large_database, args.executions, args.rows, dict(os.environ)
        )
    )
    log(
        f"{'seeded' if fresh else 'kept'} {args.large_database}: seed v{marker['seed_version']}, "
        f"{marker['migration']}, seeded in {marker['seconds']:.0f} s"
    )
    asyncio.run(bench.recreate_database(admin, args.empty_database))
    tmp = Path(tempfile.mkdtemp(prefix="flowgate-bench-large-"))
    empty = Side("empty", empty_url, redis_url, tmp)
    bench.flowgate(empty.env, "migrate")
    # "Empty": the same seed at 400 executions, so every page shows as many entries as on the
    # large database (a full executions page, a full approvals page) and only the tables' size
    # differs; a truly empty database would compare a page of 50 entries with an empty one.
    asyncio.run(seed_large.seed(empty_url, args.small_executions, args.rows, log=False))
    large = Side("large", large_url, redis_url, tmp)
    sides = [empty, large]
    body_file = tmp / "execute.json"
    body_file.write_text(json.dumps({"input": {"csvData": bench.csv_rows(args.rows)}}))
    redis = Redis.from_url(redis_url)
    wrk_path = bench.ensure_wrk()
    rows: list[dict[str, Any]] = []
    measured: dict[str, Any] = {}
    try:
        for side in sides:
            side.prepare()
        seeded_key = {
            side.name: asyncio.run(
                _sql(side.db_url, "SELECT id FROM api_key WHERE name = 'bench-large-1'")
            )[0][0]["id"]
            for side in sides
        }
        with httpx.Client() as client, bench.running([s.server for s in sides], client):
            paths: dict[str, dict[str, str]] = {}
            for side in sides:
                side.sign_in(client)
                answer = client.post(
                    f"{side.server.base}{bench.PUBLIC}/agents/{bench.WORKFLOW_ID}/execute",
                    content=body_file.read_bytes(),
                    headers={"Authorization": f"Bearer {side.key}",
                             "Content-Type": "application/json"},
                )  # fmt: skip
                if answer.status_code != 202:
                    raise bench.BenchError(f"{side.name} execute: {answer.status_code}")
                execution_id = answer.json()["executionId"]
                key_id = str(seeded_key[side.name])
                paths[side.name] = {
                    "status": f"{bench.PUBLIC}/executions/{execution_id}/status",
                    "execute": f"{bench.PUBLIC}/agents/{bench.WORKFLOW_ID}/execute",
                    "executions list": "/dashboard/executions",
                    "list ?status=completed": "/dashboard/executions?status=completed",
                    "list ?workflow=": f"/dashboard/executions?workflow={bench.WORKFLOW_ID}",
                    "list ?api_key=": f"/dashboard/executions?api_key={key_id}",
                    "approvals queue": "/dashboard/approvals",
                    "a key's page": f"/dashboard/keys/{key_id}",
                }
                for name, path in paths[side.name].items():
                    if name == "execute":
                        continue
                    check = client.get(
                        side.server.base + path,
                        headers={"Authorization": f"Bearer {side.key}", "Cookie": side.cookie},
                    )
                    if check.status_code != 200:
                        raise bench.BenchError(f"{side.name} {path}: {check.status_code}")
            for name in paths["empty"]:
                samples: dict[str, list[bench.Measurement]] = {"empty": [], "large": []}
                for r in range(max(args.repeat, 1)):
                    # As figures 1-3: alternate (empty, large, large, empty, …) and keep each
                    # side's fastest, so a slow spell of the VM does not land on one side.
                    for side in sides if r % 2 == 0 else sides[::-1]:
                        w = bench.Wrk(
                            wrk_path, 2, args.duration, args.warmup, side.key, body_file,
                            QueueOnly(redis), (f"Cookie: {side.cookie}",),
                        )  # fmt: skip
                        samples[side.name].append(
                            w.measure(
                                f"{name}, {side.name}",
                                side.server,
                                paths[side.name][name],
                                args.connections,
                                post=name == "execute",
                            )
                        )
                pair = [bench.best(samples["empty"]), bench.best(samples["large"])]
                small, big = pair
                measured[name] = {"empty": small.__dict__, "large": big.__dict__}
                row = bench.figure_row(f"9 {name}: large / empty", big, small, TARGET)
                row["empty_p50_ms"], row["empty_p99_ms"] = small.p50_ms, small.p99_ms
                rows.append(row)
    finally:
        redis.flushdb()
        redis.close()
        for side in sides:
            side.cleanup()
    return {
        "figures": rows,
        "measurements": measured,
        "large_database": {
            "name": args.large_database,
            "seeded_now": fresh,
            "seed_version": marker["seed_version"],
            "migration": marker["migration"],
            "seed_seconds": round(float(marker["seconds"]), 1),
            "executions": marker["executions"],
            "rows_per_execution": marker["rows_per_execution"],
        },
        "runtime_s": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    try:
        print(json.dumps(main(), default=str))
    except bench.BenchError as exc:
        log(f"failed: {exc}")
        sys.exit(1)
