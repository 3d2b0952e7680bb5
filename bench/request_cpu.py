"""`make bench-cpu`: CPU per request of the public status and execute endpoints, in process.

Calls the ASGI apps directly (no server, no load generator, one request at a time), so the
figure is what the app itself costs: flowgate's `create_app()` against the baselines of
bench/baseline_app.py, on a database of its own (`flowgate_bench_cpu`, Redis DB 12). It moves
far less than requests per second on a shared machine, and `--profile status|execute` prints
where the time goes (cProfile, sorted by cumulative time; cProfile roughly doubles every
figure, so read it for proportions).

    make bench-cpu
    make bench-cpu BENCH_ARGS="--requests 5000 --profile execute"
    make bench-cpu BENCH_ARGS=--served   # as `flowgate serve` runs it (metrics, proxy headers)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import run as bench  # noqa: E402 (bench/run.py: database set-up shared with `make bench`)

App = Callable[..., Awaitable[None]]
Request = tuple[str, str, dict[str, str], bytes]  # method, path, headers, body


async def call(
    app: App, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, bytes]:
    """One request straight into the ASGI app: status code and body."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "state": {},
    }  # fmt: skip
    messages: list[dict[str, Any]] = []
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # a client that never disconnects
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    return int(messages[0]["status"]), b"".join(m.get("body", b"") for m in messages[1:])


async def started(app: App) -> None:
    """Run the app's lifespan startup (its pools) and leave it running."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    asyncio.get_running_loop().create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    answer = await outbox.get()
    if answer["type"] != "lifespan.startup.complete":
        raise bench.BenchError(f"app did not start: {answer}")


async def cpu_us(app: App, request: Request, count: int) -> float:
    begin = time.process_time()
    for _ in range(count):
        await call(app, *request)
    return (time.process_time() - begin) * 1e6


async def measure(
    ours: tuple[App, Request], baseline: tuple[App, Request], count: int, rounds: int = 10
) -> tuple[float, float]:
    """CPU µs per request of each, over `count` requests in alternating rounds (so a change in
    the machine's speed while measuring affects both alike), after 200 each to warm up."""
    for app, request in (ours, baseline):
        await cpu_us(app, request, 200)
    totals = [0.0, 0.0]
    per_round = max(count // rounds, 1)
    for _ in range(rounds):
        for index, (app, request) in enumerate((ours, baseline)):
            totals[index] += await cpu_us(app, request, per_round)
    return totals[0] / (per_round * rounds), totals[1] / (per_round * rounds)


async def profile(app: App, request: Request, count: int, sort: str) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    await cpu_us(app, request, count)
    profiler.disable()
    stats = pstats.Stats(profiler).sort_stats(sort)
    if sort == "cumulative":  # our code and the framework layers, not the event loop's
        stats.print_stats(r"web/|worker/|litestar/(routes|_kwargs|handlers|response)|asyncpg/", 40)
    else:
        stats.print_stats(40)


async def main(args: argparse.Namespace, key: str, body: bytes) -> dict[str, Any]:
    import baseline_app

    from web.app import create_app, create_served_app

    # --served: the app as `flowgate serve` runs it (proxy headers, request metrics in
    # prometheus-client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR set below).
    ours = create_served_app() if args.served else create_app()
    baseline = baseline_app.create_app()
    await started(ours)
    await started(baseline)
    json_headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    auth = {"Authorization": f"Bearer {key}"}
    execute = f"/agents/{bench.WORKFLOW_ID}/execute"
    ours_execute = ("POST", bench.PUBLIC + execute, {**auth, **json_headers}, body)
    # One execution to read (it stays pending: no worker runs).
    status, answer = await call(ours, *ours_execute)
    if status != 202:
        raise bench.BenchError(f"execute answered {status}: {answer.decode()}")
    execution_id = json.loads(answer)["executionId"]
    cases = {
        "status": (
            (ours, ("GET", f"{bench.PUBLIC}/executions/{execution_id}/status", auth, b"")),
            (baseline, ("GET", f"/executions/{execution_id}/status", {}, b"")),
        ),
        "execute": (
            (ours, ours_execute),
            (baseline, ("POST", execute, json_headers, body)),
        ),
    }
    result: dict[str, Any] = {}
    for name, ((app, request), (base_app, base_request)) in cases.items():
        count = args.requests if name == "status" else max(args.requests // 5, 100)
        for which, target in (("flowgate", (app, request)), ("baseline", (base_app, base_request))):
            status, _ = await call(target[0], *target[1])
            if status not in (200, 202):
                raise bench.BenchError(f"{which} {name} answered {status}")
        if args.profile == name:
            await profile(app, request, count, args.sort)
        us, base_us = await measure((app, request), (base_app, base_request), count)
        result[name] = {
            "flowgate_cpu_us": round(us),
            "baseline_cpu_us": round(base_us),
            "ratio": round(base_us / us, 2),
            "requests": count,
        }
        bench.log(
            f"{name:8} flowgate {us:7.0f} µs/req   baseline {base_us:7.0f} µs/req   "
            f"baseline/flowgate {base_us / us:.2f}"
        )
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/request_cpu.py", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=3000, help="status requests (execute: 1/5)")
    p.add_argument("--profile", choices=["status", "execute"], help="print a cProfile summary")
    p.add_argument("--sort", choices=["cumulative", "tottime"], default="cumulative")
    p.add_argument("--rows", type=int, default=100)
    p.add_argument("--database", default="flowgate_bench_cpu")
    p.add_argument("--redis-db", type=int, default=12)
    p.add_argument("--served", action="store_true", help="the app as flowgate serve runs it")
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(None)
    with tempfile.TemporaryDirectory() as folder:
        setup = bench.prepare(arguments, Path(folder))
        body_bytes = setup.body_file.read_bytes()
        # Settings and piccolo_conf read the environment when first imported: set it first.
        os.environ.update(setup.env)
        os.environ.setdefault("FLOWGATE_LOG_LEVEL", "WARNING")
        os.environ.setdefault("FLOWGATE_SECRET_KEY", "bench")
        if arguments.served:  # before web (and prometheus-client) is imported
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(Path(folder))
        print(json.dumps(asyncio.run(main(arguments, setup.key, body_bytes))))
