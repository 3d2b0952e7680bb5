"""`make bench`: start what the benchmark needs, measure, print a table, write JSON.

Expects DATABASE_URL and REDIS_URL to reach running servers (the Makefile gets them from
scripts/services.sh). Everything the benchmark writes goes to a database and a Redis DB of its
own (`flowgate_bench` and DB 13 by default): the database is dropped and re-migrated at the
start of every run, the Redis DB is flushed before every measurement and at the end.

Servers are started here as subprocesses on free 127.0.0.1 ports, one process each, and stopped
in a `finally` (also on Ctrl-C or SIGTERM). The load generator is wrk (installed with apt-get
when missing). See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
WRK_DIR = BENCH / "wrk"
BIN = Path(sys.executable).parent
WORKFLOW_ID = "workflow_bfsi_marketing_template"
PUBLIC = "/api/v1/public"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Other work using this much of the machine's CPU during a measurement earns a note.
BUSY_PERCENT = 10.0

# Targets from the benchmark issue: the measured rps as a ratio of its reference's rps.
LIMITER_TARGET = 0.85
READ_TARGET = 0.70
WRITE_TARGET = 0.50
SSE_P99_TARGET_MS = 250.0  # issue #14: a status change reaches its stream's client
IDEM_TARGET = 0.90  # issue #14: an Idempotency-Key costs at most a tenth of execute's rate
WORKER_ROWS_TARGET = 2000
WORKER_BASELINE_TARGET = 0.5  # issue #17: the worker against bare asyncpg's same writes
TWO_WORKERS_TARGET = 1.6  # issue #17: on a machine with at least 2 free cores
WEBHOOK_P99_TARGET_MS = 250
# Issue #16: two workers sharing a provider's limit reach this share of it ...
PROVIDER_SHARE_TARGET = 0.9
PROVIDER_LLM_REFUSED_TARGET = 0.01  # ... with at most 1 % of LLM calls refused

CITIES = ["Mumbai", "Delhi", "Bengaluru", "Chennai", "Pune", "Kolkata", "Hyderabad"]
NAMES = ["John Doe", "Asha Rao", "Vikram Singh", "Priya Nair", "Rahul Mehta", "Neha Iyer"]
BRACKETS = ["25000-50000", "50000-75000", "75000-100000", "100000+"]


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """subprocess.run with text output; every command here is a fixed argv, never a shell."""
    kwargs.setdefault("check", False)
    return subprocess.run(cmd, text=True, **kwargs)


# --- tools ----------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise BenchError("wrk is not installed and there is no apt-get to install it")
    log("installing wrk with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if run([apt, "install", "-y", "wrk"], capture_output=True, env=env).returncode != 0:
        run([apt, "update"], capture_output=True, env=env)
        result = run([apt, "install", "-y", "wrk"], capture_output=True, env=env)
        if result.returncode != 0:
            raise BenchError(f"apt-get install wrk failed:\n{result.stderr[-2000:]}")
    found = shutil.which("wrk")
    if found is None:
        raise BenchError("wrk is still not on PATH after apt-get install")
    return found


def granian_bin() -> str:
    """granian is a dependency (the default server of `flowgate serve`)."""
    granian = BIN / "granian"
    if not granian.exists():
        raise BenchError("granian is not installed in .venv: run `make install`")
    return str(granian)


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def wrk_version(wrk: str) -> str:
    out = run([wrk, "--version"], capture_output=True)
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


# --- database and Redis ---------------------------------------------------------------------


def with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


async def recreate_database(admin_url: str, name: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        # `name` matched [a-z_][a-z0-9_]* before it got here.
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def open_up_keys(database_url: str) -> None:
    """The benchmark measures what the limiter and the quota cost, never their refusals."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "UPDATE api_key SET rate_limit_burst = 100000000, "
            "rate_limit_refill_per_second = 100000000, monthly_limit = 1000000000"
        )
    finally:
        await connection.close()


def flowgate(env: dict[str, str], *args: str) -> str:
    result = run([str(BIN / "flowgate"), *args], capture_output=True, env=env, cwd=ROOT)
    if result.returncode != 0:
        raise BenchError(f"flowgate {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def csv_rows(count: int) -> list[dict[str, str]]:
    return [
        {
            "customerId": f"CUST{i:03d}",
            "name": NAMES[i % len(NAMES)],
            "phone": f"+9186105{i:05d}",
            "city": CITIES[i % len(CITIES)],
            "income_bracket": BRACKETS[i % len(BRACKETS)],
            "credit_score": str(600 + (i * 37) % 250),
        }
        for i in range(1, count + 1)
    ]


# --- servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_cpu() -> dict[int, tuple[str, int, int]]:
    """pid -> (command name, process group, user + system CPU ticks), from /proc/*/stat."""
    found: dict[int, tuple[str, int, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        head, _, tail = text.rpartition(")")
        fields = tail.split()  # fields[0] is the state, field 3 of proc(5)
        name = head.partition("(")[2]
        found[int(stat.parent.name)] = (name, int(fields[2]), int(fields[11]) + int(fields[12]))
    return found


# What a measurement itself keeps busy, besides its server: wrk, PostgreSQL and Redis.
OWN_HELPERS = {"wrk", "postgres", "valkey-server", "redis-server"}


def other_cpu_percent(
    before: dict[int, tuple[str, int, int]],
    after: dict[int, tuple[str, int, int]],
    server_pgid: int,
    seconds: float,
) -> float:
    """CPU that other work on the machine used meanwhile, in % of all CPUs."""
    ticks = 0
    for pid, (name, pgid, used) in after.items():
        if pgid == server_pgid or pid == os.getpid() or name in OWN_HELPERS:
            continue
        ticks += used - before.get(pid, (name, pgid, 0))[2]
    return round(100 * ticks / CLOCK_TICKS / seconds / (os.cpu_count() or 1), 1)


@dataclass
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    cwd: Path = ROOT
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("wb") as log_file:
            # A session of its own: Ctrl-C reaches only this script, whose `finally` stops the
            # server's whole process group (granian runs its worker as a child process).
            self.process = subprocess.Popen(
                self.cmd,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, client: httpx.Client, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise BenchError(f"{self.name} exited during startup:\n{self.log_tail()}")
            try:
                if client.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.name} not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except ProcessLookupError:
            pass


@contextmanager
def running(specs: list[Server], client: httpx.Client) -> Iterator[None]:
    started: list[Server] = []
    try:
        for server in specs:
            server.start()
            started.append(server)
        for server in specs:
            server.wait_ready(client)
        yield
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave servers behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for server in reversed(started):
                server.stop()
        finally:
            signal.signal(signal.SIGINT, previous)
        if started:
            log(f"stopped {len(started)} servers")


# --- measurements ---------------------------------------------------------------------------


@dataclass
class Measurement:
    name: str
    server: str
    url: str
    method: str
    connections: int
    threads: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    # Server CPU (its whole process group) per request: less sensitive to a busy machine.
    server_cpu_us_per_request: float
    # Other work on the machine during the measurement: CPU of processes that are not this
    # benchmark's (in % of all CPUs), and the 1-minute load average at its start.
    other_cpu_percent: float
    load_average: float
    errors: dict[str, int] = field(default_factory=dict)
    # Every repetition's rps; the figures above are those of the fastest one.
    rps_samples: list[float] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def best(samples: list[Measurement]) -> Measurement:
    """The fastest repetition: on a shared machine, noise only ever slows a run down."""
    chosen = max(samples, key=lambda s: s.rps)
    chosen.rps_samples = [s.rps for s in samples]
    return chosen


@dataclass
class Wrk:
    path: str
    threads: int
    duration: int
    warmup: int
    key: str
    body_file: Path
    redis: Any  # flushdb() before each measurement
    extra_headers: tuple[str, ...] = ()  # e.g. a dashboard session's Cookie (figure 9)

    def _run(
        self, url: str, connections: int, seconds: int, post: bool, script_name: str | None = None
    ) -> tuple[dict[str, Any], str]:
        script = WRK_DIR / (script_name or ("post_json.lua" if post else "report.lua"))
        threads = str(min(self.threads, connections))
        cmd = [self.path, "-t", threads, "-c", str(connections), "-d", f"{seconds}s"]
        cmd += ["--timeout", "10s", "-s", str(script)]
        cmd += ["-H", f"Authorization: Bearer {self.key}"]
        for header in self.extra_headers:
            cmd += ["-H", header]
        cmd.append(url)
        env = {
            **os.environ,
            "BENCH_BODY_FILE": str(self.body_file),
            "BENCH_WRK_REPORT": str(WRK_DIR / "report.lua"),
        }
        result = run(cmd, capture_output=True, env=env, timeout=seconds + 60)
        for line in result.stdout.splitlines():
            if line.startswith("BENCH_RESULT "):
                data: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
                return data, result.stdout
        raise BenchError(f"wrk gave no result:\n{result.stdout}\n{result.stderr}")

    def measure(
        self,
        name: str,
        server: Server,
        path: str,
        connections: int,
        *,
        post: bool = False,
        script: str | None = None,
    ) -> Measurement:
        url = server.base + path
        self.redis.flushdb()  # a fresh bucket, an empty queue
        if self.warmup > 0:
            self._run(url, connections, self.warmup, post, script)
        load = load_average()
        pgid = server.process.pid if server.process else -1
        before = process_cpu()
        data, raw = self._run(url, connections, self.duration, post, script)
        after = process_cpu()
        cpu = sum(t for _, g, t in after.values() if g == pgid)
        cpu -= sum(t for _, g, t in before.values() if g == pgid)
        seconds = data["duration_us"] / 1e6
        other = other_cpu_percent(before, after, pgid, seconds)
        requests = int(data["requests"])
        errors = {
            k: int(data[k])
            for k in ("connect_errors", "read_errors", "write_errors", "timeouts", "non_2xx_3xx")
            if data[k]
        }
        m = Measurement(
            name=name,
            server=server.name,
            url=url,
            method="POST" if post else "GET",
            connections=connections,
            threads=min(self.threads, connections),
            duration_s=round(seconds, 3),
            requests=requests,
            rps=round(requests / seconds, 1),
            p50_ms=round(data["p50_us"] / 1000, 2),
            p90_ms=round(data["p90_us"] / 1000, 2),
            p99_ms=round(data["p99_us"] / 1000, 2),
            max_ms=round(data["max_us"] / 1000, 2),
            mean_ms=round(data["mean_us"] / 1000, 2),
            server_cpu_us_per_request=round(cpu / CLOCK_TICKS * 1e6 / max(requests, 1), 1),
            other_cpu_percent=other,
            load_average=load,
            errors=errors,
        )
        note = f"  ERRORS {errors}" if errors else ""
        log(
            f"{name:<40} {m.rps:>7.1f} req/s  p50 {m.p50_ms:>7.2f} ms  p99 {m.p99_ms:>7.2f} ms  "
            f"cpu {m.server_cpu_us_per_request:>5.0f} us/req  others {other:>4.1f}% cpu{note}"
        )
        if m.error_count > max(10, requests // 100):
            raise BenchError(f"{name}: too many errors {errors}\n{raw}")
        return m


# --- the figures ----------------------------------------------------------------------------


def figure_row(
    figure: str,
    m: Measurement,
    reference: Measurement | None = None,
    target: float | None = None,
) -> dict[str, Any]:
    ratio = round(m.rps / reference.rps, 3) if reference and reference.rps else None
    cpu_ratio = (
        round(reference.server_cpu_us_per_request / m.server_cpu_us_per_request, 3)
        if reference and m.server_cpu_us_per_request
        else None
    )
    return {
        "figure": figure,
        "measurement": m.name,
        "rps": m.rps,
        "p50_ms": m.p50_ms,
        "p99_ms": m.p99_ms,
        "cpu_us_per_request": m.server_cpu_us_per_request,
        "baseline": reference.name if reference else None,
        "baseline_rps": reference.rps if reference else None,
        "baseline_p99_ms": reference.p99_ms if reference else None,
        "baseline_cpu_us_per_request": reference.server_cpu_us_per_request if reference else None,
        "ratio": ratio,
        # The same ratio from server CPU per request (baseline / measured), for noisy machines.
        "cpu_ratio": cpu_ratio,
        "target": target,
        "ok": None if target is None or ratio is None else ratio >= target,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    header = ["figure", "rps", "p50 ms", "p99 ms", "baseline rps", "ratio", "target", "ok?"]
    lines = [header]
    for row in rows:
        lines.append(
            [
                row["figure"],
                fmt(row["rps"], ".0f"),
                fmt(row["p50_ms"], ".2f"),
                fmt(row["p99_ms"], ".2f"),
                fmt(row["baseline_rps"], ".0f"),
                fmt(row["ratio"], ".2f"),
                row.get("target_text")
                or ("-" if row["target"] is None else f">= {row['target']:.2f}"),
                "-" if row["ok"] is None else ("yes" if row["ok"] else "NO"),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        rest = [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
        out.append("  ".join([line[0].ljust(widths[0]), *rest]))
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def script_rows(env: dict[str, str], repeat: int) -> list[dict[str, Any]]:
    """The figures measured by their own scripts, with the servers above stopped: worker
    throughput (bench/worker_throughput.py) and webhook latency (bench/webhook_latency.py)."""
    empty = {key: None for key in ("rps", "p50_ms", "p99_ms", "baseline_rps", "ratio", "target")}
    rows = []
    log("worker throughput: 50 executions of 100 rows, one worker")
    worker = json.loads(
        _last_line(
            run(
                [
                    sys.executable,
                    str(ROOT / "bench" / "worker_throughput.py"),
                    "--repeat",
                    str(repeat),
                ],
                env=env,
                capture_output=True,
                check=True,
            ).stdout
        )
    )
    rows.append(
        {
            **empty,
            "figure": "5 worker rows/s, 50 x 100 rows",
            "rps": worker["rows_per_s"],
            "target_text": ">= 2000 rows/s",
            "ok": worker["rows_per_s"] >= WORKER_ROWS_TARGET,
            "details": worker,
        }
    )
    rows.append(
        {
            **empty,
            "figure": "5a worker / bare-asyncpg baseline, rows/s",
            "rps": worker["rows_per_s"],
            "baseline_rps": worker["baseline_rows_per_s"],
            "ratio": worker["ratio_to_baseline"],
            "target": WORKER_BASELINE_TARGET,
            "ok": worker["ratio_to_baseline"] >= WORKER_BASELINE_TARGET,
        }
    )
    rows.append(
        {
            **empty,
            "figure": f"5b two workers / one, rows/s ({worker['cpus']} cpus, "
            f"others {worker['workers_other_cpu_percent']:.0f}% cpu)",
            "rps": worker["workers_2_rows_per_s"],
            "baseline_rps": worker["workers_1_rows_per_s"],
            "ratio": worker["two_workers_ratio"],
            "target": TWO_WORKERS_TARGET,
            "ok": worker["two_workers_ratio"] >= TWO_WORKERS_TARGET,
        }
    )
    log("webhook latency: 500 events to a receiver on 127.0.0.1")
    hooks = json.loads(
        _last_line(
            run(
                [sys.executable, str(ROOT / "bench" / "webhook_latency.py")],
                env=env,
                capture_output=True,
                check=True,
            ).stdout
        )
    )
    rows.append(
        {
            **empty,
            "figure": "6 webhook latency, 500 events",
            "p50_ms": hooks["p50_ms"],
            "p99_ms": hooks["p99_ms"],
            "target_text": "p99 < 250 ms",
            "ok": hooks["delivered"] == hooks["events"] and hooks["p99_ms"] < WEBHOOK_P99_TARGET_MS,
            "details": hooks,
        }
    )
    log("status streams: 1,000 open on one web process, 200 changes")
    sse = json.loads(
        _last_line(
            run(
                [sys.executable, str(ROOT / "bench" / "sse_latency.py")],
                env=env,
                capture_output=True,
                check=True,
            ).stdout
        )
    )
    rows.append(
        {
            **empty,
            "figure": f"8 status event latency, {sse['streams']} streams",
            "p50_ms": sse["p50_ms"],
            "p99_ms": sse["p99_ms"],
            "target_text": "p99 < 250 ms",
            "ok": sse["received"] == sse["changes"] and (sse["p99_ms"] or 1e9) < SSE_P99_TARGET_MS,
            "details": sse,
        }
    )
    log("provider limits: 2 workers, 10 x 100 rows, LLM 600/min and WhatsApp 20/s, 25 s each")
    limits = json.loads(
        _last_line(
            run(
                [sys.executable, str(ROOT / "bench" / "provider_limits.py"), "--seconds", "25"],
                env=env,
                capture_output=True,
                check=True,
            ).stdout
        )
    )
    for kind, text in (("llm", "LLM 600/min"), ("whatsapp", "WhatsApp 20/s")):
        for shared in ("shared", "unshared"):
            figure = limits[f"{kind}_{shared}"]
            ok = figure["achieved_share"] >= PROVIDER_SHARE_TARGET and (
                figure["refused_share"] <= PROVIDER_LLM_REFUSED_TARGET
                if kind == "llm"
                else figure["refused_after_first_s"] == 0
            )
            rows.append(
                {
                    **empty,
                    "figure": f"10 {text}, limiter {'on' if shared == 'shared' else 'off'}",
                    "rps": figure["achieved_per_s"],
                    "ratio": figure["achieved_share"],
                    "target_text": (">= 0.9, <= 1% 429" if kind == "llm" else ">= 0.9, 0 429 >1s")
                    if shared == "shared"
                    else "-",
                    "ok": ok if shared == "shared" else None,
                    "details": figure,
                }
            )
    return rows


def large_rows(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Figure 9 (bench/large_tables.py): its rows and its details."""
    log("large tables: the pages on 100,000 executions / 10,000,000 rows against 400 executions")
    cmd = [sys.executable, str(BENCH / "large_tables.py"), "--duration", str(args.duration)]
    cmd += ["--warmup", str(args.warmup), "--repeat", str(args.repeat)]
    done = run(cmd, capture_output=False, stdout=subprocess.PIPE, check=True, env=os.environ)
    result = json.loads(_last_line(done.stdout))
    return result["figures"], result


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=int(env("BENCH_DURATION", "10")))
    p.add_argument("--warmup", type=int, default=int(env("BENCH_WARMUP", "2")))
    p.add_argument(
        "--repeat",
        type=int,
        default=int(env("BENCH_REPEAT", "2")),
        help="repetitions of figures 1, 2, 3 and 7, in alternating order; the fastest counts",
    )
    p.add_argument("--threads", type=int, default=int(env("BENCH_THREADS", "2")))
    p.add_argument(
        "--connections",
        default=env("BENCH_CONNECTIONS", "16,64"),
        help="comma-separated connection counts of figures 1 and 2; figure 4 uses the last",
    )
    p.add_argument("--write-connections", type=int, default=int(env("BENCH_WRITE_CONN", "16")))
    p.add_argument("--rows", type=int, default=100, help="rows per execute body")
    p.add_argument("--database", default=env("BENCH_DATABASE", "flowgate_bench"))
    p.add_argument("--redis-db", type=int, default=int(env("BENCH_REDIS_DB", "13")))
    p.add_argument("--strict", action="store_true", help="exit 1 when a figure misses its target")
    p.add_argument(
        "--only",
        choices=["large"],
        help="large: only figure 9 (the pages on 100,000 executions / 10,000,000 rows)",
    )
    p.add_argument(
        "--skip-large", action="store_true", help="every figure but 9 (no large database)"
    )
    return p.parse_args(argv)


@dataclass
class Setup:
    env: dict[str, str]
    key: str
    redis: Redis
    tmp: Path
    body_file: Path


def prepare(args: argparse.Namespace, tmp: Path) -> Setup:
    """A fresh, migrated benchmark database with one wide-open key, and the execute body."""
    base_db_url = os.environ.get("DATABASE_URL")
    base_redis_url = os.environ.get("REDIS_URL")
    if not base_db_url or not base_redis_url:
        raise BenchError("DATABASE_URL and REDIS_URL must be set: run `make bench`")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", args.database):
        raise BenchError(f"not a plain database name: {args.database!r}")
    if urlsplit(base_db_url).path.lstrip("/") == args.database:
        raise BenchError(f"{args.database!r} is DATABASE_URL's own database")
    if urlsplit(base_redis_url).path.lstrip("/") == str(args.redis_db):
        raise BenchError(f"Redis DB {args.redis_db} is REDIS_URL's own")
    db_url = with_path(base_db_url, "/" + args.database)
    redis_url = with_path(base_redis_url, f"/{args.redis_db}")

    log(f"recreating database {args.database} and migrating it; Redis DB {args.redis_db}")
    asyncio.run(recreate_database(with_path(base_db_url, "/postgres"), args.database))
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url}
    env["PICCOLO_CONF"] = "piccolo_conf"
    flowgate(env, "migrate")
    key = json.loads(flowgate(env, "keys", "create", "--name", "bench", "--json"))["key"]
    asyncio.run(open_up_keys(db_url))
    body_file = tmp / "execute.json"
    body_file.write_text(json.dumps({"input": {"csvData": csv_rows(args.rows)}}))
    return Setup(env, key, Redis.from_url(redis_url), tmp, body_file)


def make_servers(setup: Setup, granian: str) -> list[Server]:
    def uvicorn(name: str, app: str, extra_env: dict[str, str], *more: str) -> Server:
        port = free_port()
        cmd = [str(BIN / "uvicorn"), app, "--factory", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--log-level", "warning", "--no-access-log", "--timeout-graceful-shutdown", "5"]
        return Server(
            name, [*cmd, *more], {**setup.env, **extra_env}, setup.tmp / f"{name}.log", port
        )

    port = free_port()
    granian_cmd = [granian, "--interface", "asgi", "--factory", "--host", "127.0.0.1"]
    granian_cmd += ["--port", str(port), "--workers", "1", "--log-level", "warning"]
    return [
        uvicorn("uvicorn-limited", "web.app:create_app", {}),
        uvicorn(
            "uvicorn-unlimited", "web.app:create_app", {"FLOWGATE_RATE_LIMIT_ENABLED": "false"}
        ),
        uvicorn("uvicorn-baseline", "baseline_app:create_app", {}, "--app-dir", str(BENCH)),
        Server(
            "granian-limited",
            [*granian_cmd, "web.app:create_served_app"],
            setup.env,
            setup.tmp / "granian-limited.log",
            port,
        ),
    ]


@dataclass
class Paths:
    status: str
    execute: str
    baseline_status: str
    baseline_execute: str


def check_servers(client: httpx.Client, srv: dict[str, Server], setup: Setup) -> Paths:
    """One execution to read, and proof that every server answers what will be measured (and
    that the limiter is on exactly where it should be)."""
    auth = {"Authorization": f"Bearer {setup.key}"}
    json_headers = {**auth, "Content-Type": "application/json"}
    body = setup.body_file.read_bytes()
    baseline_execute = f"/agents/{WORKFLOW_ID}/execute"
    answer = client.post(
        srv["uvicorn-limited"].base + PUBLIC + baseline_execute, content=body, headers=json_headers
    )
    if answer.status_code != 202:
        raise BenchError(f"execute answered {answer.status_code}: {answer.text}")
    execution_id = answer.json()["executionId"]
    paths = Paths(
        status=f"{PUBLIC}/executions/{execution_id}/status",
        execute=PUBLIC + baseline_execute,
        baseline_status=f"/executions/{execution_id}/status",
        baseline_execute=baseline_execute,
    )
    for name, path in [
        ("uvicorn-limited", paths.status),
        ("uvicorn-unlimited", paths.status),
        ("granian-limited", paths.status),
        ("uvicorn-baseline", paths.baseline_status),
    ]:
        answer = client.get(srv[name].base + path, headers=auth)
        if answer.status_code != 200:
            raise BenchError(f"{name} GET {path}: {answer.status_code} {answer.text}")
        limited = "X-RateLimit-Limit" in answer.headers
        if limited != name.endswith("-limited"):
            raise BenchError(f"{name}: rate-limit headers {'present' if limited else 'missing'}")
    answer = client.post(
        srv["uvicorn-baseline"].base + baseline_execute, content=body, headers=json_headers
    )
    if answer.status_code != 202:
        raise BenchError(f"baseline execute: {answer.status_code} {answer.text}")
    return paths


def measure_all(
    args: argparse.Namespace, w: Wrk, srv: dict[str, Server], paths: Paths, counts: list[int]
) -> tuple[list[dict[str, Any]], dict[str, Measurement]]:
    limited, unlimited = srv["uvicorn-limited"], srv["uvicorn-unlimited"]
    baseline, granian = srv["uvicorn-baseline"], srv["granian-limited"]
    samples: dict[str, list[Measurement]] = {}
    for c in counts:
        plan = [
            (f"on{c}", f"status, limiter on, uvicorn, {c}c", limited, paths.status),
            (f"off{c}", f"status, limiter off, uvicorn, {c}c", unlimited, paths.status),
            (f"base{c}", f"read baseline, uvicorn, {c}c", baseline, paths.baseline_status),
        ]
        for r in range(max(args.repeat, 1)):
            # Alternate the order (ABC, CBA, …) so a slow drift does not favour one of them.
            for key, name, server, path in plan if r % 2 == 0 else plan[::-1]:
                samples.setdefault(key, []).append(w.measure(name, server, path, c))
    wc, rows_n = args.write_connections, args.rows
    writes = [
        ("exec", f"execute {rows_n} rows, uvicorn, {wc}c", paths.execute, limited, None),
        ("wbase", f"write baseline, uvicorn, {wc}c", paths.baseline_execute, baseline, None),
        (
            "idem",
            f"execute + Idempotency-Key, uvicorn, {wc}c",
            paths.execute,
            limited,
            "post_json_idempotent.lua",
        ),
    ]
    for r in range(max(args.repeat, 1)):
        # Figures 3 and 7 repeat and alternate like 1 and 2: each pair is measured seconds apart.
        for key, name, path, server, script in writes if r % 2 == 0 else writes[::-1]:
            samples.setdefault(key, []).append(
                w.measure(name, server, path, wc, post=True, script=script)
            )
    m = {key: best(runs) for key, runs in samples.items()}
    last = counts[-1]
    m["granian"] = w.measure(f"status, limiter on, granian, {last}c", granian, paths.status, last)

    rows: list[dict[str, Any]] = []
    for c in counts:
        rows.append(
            figure_row(f"1 limiter on / off, {c}c", m[f"on{c}"], m[f"off{c}"], LIMITER_TARGET)
        )
        rows.append(figure_row(f"  status, limiter off, {c}c", m[f"off{c}"]))
    for c in counts:
        rows.append(
            figure_row(f"2 status / read baseline, {c}c", m[f"on{c}"], m[f"base{c}"], READ_TARGET)
        )
        rows.append(figure_row(f"  read baseline, {c}c", m[f"base{c}"]))
    rows.append(
        figure_row(f"3 execute / write baseline, {wc}c", m["exec"], m["wbase"], WRITE_TARGET)
    )
    rows.append(figure_row(f"  write baseline, {wc}c", m["wbase"]))
    rows.append(
        figure_row(
            f"7 execute with / without Idempotency-Key, {wc}c", m["idem"], m["exec"], IDEM_TARGET
        )
    )
    rows.append(figure_row(f"4 granian / uvicorn, {last}c", m["granian"], m[f"on{last}"]))
    rows.append(figure_row(f"  uvicorn (as in 1), {last}c", m[f"on{last}"]))
    return rows, m


def main_large(args: argparse.Namespace) -> int:
    """`--only large`: figure 9 alone, its table, its JSON (bench/results/large-<time>.json)."""
    rows, details = large_rows(args)
    print()
    print(format_table(rows))
    print()
    busy = max(
        max(m["empty"]["other_cpu_percent"], m["large"]["other_cpu_percent"])
        for m in details["measurements"].values()
    )
    if busy >= BUSY_PERCENT:
        print(
            f"note: other work on this machine used up to {busy:.0f}% of its CPUs during "
            "a measurement: the figures are noisier than usual (see other_cpu_percent)"
        )
    now = datetime.now(UTC)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamped = RESULTS / f"large-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    stamped.write_text(json.dumps({"machine": {"cpus": os.cpu_count()}, **details}, indent=2))
    print(f"wrote {stamped.relative_to(ROOT)}")
    missed = [row["figure"] for row in rows if row["ok"] is False]
    return 1 if missed and args.strict else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only == "large":
        return main_large(args)
    counts = [int(c) for c in args.connections.split(",") if c.strip()]
    started = time.monotonic()
    load_at_start = load_average()
    wrk_path = ensure_wrk()
    granian = granian_bin()
    tmp = Path(tempfile.mkdtemp(prefix="flowgate-bench-"))
    setup: Setup | None = None
    done = False
    try:
        setup = prepare(args, tmp)
        specs = make_servers(setup, granian)
        srv = {server.name: server for server in specs}
        with httpx.Client() as client, running(specs, client):
            up = ", ".join(f"{s.name} :{s.port}" for s in specs)
            log(f"servers up after {time.monotonic() - started:.1f} s: {up}")
            paths = check_servers(client, srv, setup)
            w = Wrk(
                wrk_path,
                args.threads,
                args.duration,
                args.warmup,
                setup.key,
                setup.body_file,
                setup.redis,
            )
            rows, m = measure_all(args, w, srv, paths, counts)
        rows += script_rows(setup.env, args.repeat)
        large: dict[str, Any] | None = None
        if not args.skip_large:
            large_figures, large = large_rows(args)
            rows += large_figures

        now = datetime.now(UTC)
        report = {
            "timestamp": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "runtime_s": round(time.monotonic() - started, 1),
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_at_start": load_at_start,
                "platform": platform.platform(),
                "python": platform.python_version(),
                "wrk": wrk_version(wrk_path),
                "packages": {
                    p: version(p)
                    for p in (
                        "litestar",
                        "uvicorn",
                        "granian",
                        "asyncpg",
                        "piccolo",
                        "arq",
                        "redis",
                    )
                },
                "uvloop": version("uvloop"),
                "httptools": version("httptools"),
            },
            "config": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "repeat": args.repeat,
                "wrk_threads": args.threads,
                "connections": counts,
                "write_connections": args.write_connections,
                "rows_per_execute": args.rows,
                "database": args.database,
                "redis_db": args.redis_db,
                "servers": {s.name: " ".join([Path(s.cmd[0]).name, *s.cmd[1:]]) for s in specs},
            },
            "figures": rows,
            "measurements": {key: asdict(value) for key, value in m.items()},
            "large_tables": large,
        }
        print()
        print(format_table(rows))
        print()
        busy = max(x.other_cpu_percent for x in m.values())
        if busy >= BUSY_PERCENT:
            print(
                f"note: other work on this machine used up to {busy:.0f}% of its CPUs during "
                "a measurement: the figures are noisier than usual (see other_cpu_percent)"
            )
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamped = RESULTS / f"{now.strftime('%Y%m%dT%H%M%SZ')}.json"
        text = json.dumps(report, indent=2) + "\n"
        stamped.write_text(text)
        (RESULTS / "latest.json").write_text(text)
        took = report["runtime_s"]
        print(f"wrote {stamped.relative_to(ROOT)} and bench/results/latest.json in {took} s")
        done = True
        missed = [row["figure"].strip() for row in rows if row["ok"] is False]
        if missed and args.strict:
            log("missed targets: " + "; ".join(missed))
            return 1
        return 0
    finally:
        if setup is not None:
            try:
                setup.redis.flushdb()  # nothing will ever consume the benchmark's queue
            except Exception as exc:
                log(f"could not flush Redis DB {args.redis_db}: {exc}")
            setup.redis.close()
        if done:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"server logs kept in {tmp}")


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"failed: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
