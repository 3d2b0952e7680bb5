"""Worker throughput: rows per second through generate -> compliance -> send (sandbox) with one
worker, for 50 executions of 100 rows approved through the API (figure 5), and as ratios in the
same run (issue #17):

- against a bare-asyncpg baseline doing the same PostgreSQL writes for the same rows (claim,
  read the rows, write the generated content, record the step, write compliance, record the
  step, pause; then claim, read, insert the sandbox messages, write the send results, complete),
  20 executions at a time like the worker's max_jobs (target >= 0.5);
- two worker processes against one (each `--drain` in a process of its own, timed from the
  first worker's startup done to the last one's end, imports and startup excluded; target >=
  1.6 on a machine with at least 2 free cores: this one has `cpus` in all, and
  `other_cpu_percent` says how busy).

Runs in one process: the public API under an ASGI client to start and approve, and one real arq
worker (burst mode) to run. Needs DATABASE_URL (a database of its own; it is truncated) and
REDIS_URL; `bench/run.py` passes its bench database. `--profile` writes a cProfile report of
the worker phases (by own time) to bench/results/worker_profile.txt.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/worker_throughput.py [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

os.environ.setdefault("FLOWGATE_LOG_LEVEL", "WARNING")
os.environ.setdefault("FLOWGATE_SECRET_KEY", "bench")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from arq.worker import Worker

from web import process
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


async def _drain(redis: Any, poll_delay: float = 0) -> float:
    """Seconds from the worker's startup done (its HTTP clients and TLS contexts made, its heap
    settled as `start_worker` does: the baseline's pool is made untimed too) to its queue
    drained."""
    started = [time.perf_counter()]

    async def timed_startup(ctx: dict[str, Any]) -> None:
        await startup(ctx)
        process.settle_heap()
        started[0] = time.perf_counter()

    worker = Worker(
        functions=functions(),
        redis_pool=redis,
        burst=True,
        poll_delay=poll_delay,
        handle_signals=False,
        on_startup=timed_startup,
        on_shutdown=shutdown,
        max_jobs=20,
    )
    try:
        await worker.main()
    finally:
        await shutdown(worker.ctx)  # not worker.close(): that would close our Redis pool
    return time.perf_counter() - started[0]


def _cpu_ticks() -> tuple[int, int]:
    """(all CPU ticks, idle ticks) of the machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]


def _own_ticks() -> int:
    """CPU ticks of this process and its children (the drain workers)."""
    t = os.times()
    return int((t.user + t.system + t.children_user + t.children_system) * os.sysconf("SC_CLK_TCK"))


async def _start_all(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    ids = []
    for _ in range(EXECUTIONS):
        response = await client.post(
            f"{PUBLIC}/agents/workflow_bfsi_marketing_template/execute",
            json={"input": {"csvData": _rows()}},
            headers=headers,
        )
        ids.append(response.json()["executionId"])
    return ids


async def _approve_all(client: httpx.AsyncClient, headers: dict[str, str], ids: list[str]) -> None:
    for execution_id in ids:
        approved = await client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=headers)
        assert approved.status_code == 200, approved.text


def _drain_processes(count: int) -> float:
    """Seconds from the first of `count` worker processes starting to drain to the last one
    finishing (each prints its own start and end, wall clock)."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--drain"], stdout=subprocess.PIPE, text=True, env=os.environ
        )
        for _ in range(count)
    ]
    spans = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        spans.append(json.loads(out.strip().splitlines()[-1]))
    return max(s["end"] for s in spans) - min(s["start"] for s in spans)


async def _drain_main() -> None:
    from piccolo_conf import DB

    await start_pool(DB, min_size=20, max_size=20)  # all open before timing, as the baseline's
    redis = queue.connect(os.environ["REDIS_URL"], 5.0)
    # 50 ms like `flowgate worker` (README: workers poll every 50 ms): with 0, two idle
    # workers would spin on Redis for the CPU the busy one needs.
    took = await _drain(redis, poll_delay=0.05)
    end = time.time()
    start = end - took
    await redis.aclose()
    await DB.close_connection_pool()
    print(json.dumps({"start": start, "end": end}))


# The baseline: the worker's PostgreSQL writes for an execution, the same bytes, in bare asyncpg
# and nothing else. What the worker wrote for one of its own executions (the same 100 rows:
# its messages, step results and output) is read before the baseline is timed and written
# again for each of the baseline's executions; see `_WorkerWrites`.
_CLAIM = (
    "UPDATE execution SET status = 'running', lease_token = gen_random_uuid(), "
    "lease_expires_at = now() + interval '60 seconds', updated_at = now() WHERE id = $1 "
    "RETURNING definition"
)
_ROWS = "SELECT id, data FROM execution_row WHERE execution = $1 ORDER BY position"
_ROWS_TO_SEND = (
    "SELECT id, data, generated_content FROM execution_row WHERE execution = $1 "
    "ORDER BY position"
)
_STEP = (
    "UPDATE execution SET current_step = current_step + 1, "
    "step_results = step_results || jsonb_build_array($2::jsonb), updated_at = now() WHERE id = $1"
)
_CONTENT = (
    "UPDATE execution_row AS r SET generated_content = v.content, content_usage = NULL "
    "FROM unnest($1::uuid[], $2::text[]) AS v(id, content) WHERE r.id = v.id"
)
_COMPLIANCE = (
    "UPDATE execution_row AS r SET compliance_status = v.status, compliance_reasons = '[]' "
    "FROM unnest($1::uuid[], $2::text[]) AS v(id, status) WHERE r.id = v.id"
)
_PAUSE = (
    "UPDATE execution SET status = 'pending_approval', approval_status = 'pending', "
    "lease_token = NULL, lease_expires_at = NULL, updated_at = now() WHERE id = $1"
)
_SANDBOX = (
    "INSERT INTO sandbox_message (id, execution_row, channel, recipient, body, message_id, "
    "created_at) SELECT gen_random_uuid(), v.id, 'whatsapp', v.recipient, v.body, "
    "'whatsapp_msg_' || replace(gen_random_uuid()::text, '-', ''), now() "
    "FROM unnest($1::uuid[], $2::text[], $3::text[]) AS v(id, recipient, body) "
    "ON CONFLICT (execution_row) DO NOTHING RETURNING execution_row, message_id"
)
_SENT = (
    "UPDATE execution_row AS r SET send_status = 'sent', message_id = v.message_id, "
    "sent_at = now() FROM unnest($1::uuid[], $2::text[]) AS v(id, message_id) WHERE r.id = v.id"
)
_COMPLETE = (
    "UPDATE execution SET status = 'completed', output = $2::jsonb, completed_at = now(), "
    "lease_token = NULL, lease_expires_at = NULL, updated_at = now() WHERE id = $1"
)


class _WorkerWrites:
    """What the worker wrote for one of its completed executions: each row's message (by
    position), each step's result, and the output (its message ids are replaced by those the
    baseline's own sandbox inserts return, so the output is as long as the worker's)."""

    def __init__(self, messages: list[str], steps: list[str], output: dict[str, Any]) -> None:
        self.messages = messages
        self.steps = steps
        self.output = output

    @classmethod
    async def of(cls, dsn: str, execution_id: str) -> _WorkerWrites:
        import asyncpg

        con = await asyncpg.connect(dsn)
        try:
            messages = [
                r["generated_content"]
                for r in await con.fetch(
                    "SELECT generated_content FROM execution_row WHERE execution = $1 "
                    "ORDER BY position",
                    UUID(execution_id),
                )
            ]
            done = await con.fetchrow(
                "SELECT step_results, output FROM execution WHERE id = $1", UUID(execution_id)
            )
        finally:
            await con.close()
        assert done is not None and all(messages), "the worker's execution is not complete"
        steps = [json.dumps(step) for step in json.loads(done["step_results"])]
        return cls(messages, steps, json.loads(done["output"]))

    def output_with(self, message_ids: list[str]) -> str:
        results = [
            {**result, "messageId": message_id}
            for result, message_id in zip(self.output["results"], message_ids, strict=True)
        ]
        return json.dumps({**self.output, "results": results})


async def _baseline(connections: Any, ids: list[str], phase: str, writes: _WorkerWrites) -> float:
    """Seconds for one phase of the baseline on `connections`: an asyncpg pool of 20, opened
    untimed and kept from round to round as the worker keeps its own."""
    gate = asyncio.Semaphore(20)

    async def one(execution_id: UUID) -> None:
        async with gate, connections.acquire() as con:
            await con.fetchval(_CLAIM, execution_id)
            if phase == "generate":  # generate_content, compliance_check, then the approval
                rows = await con.fetch(_ROWS, execution_id)
                row_ids = [r["id"] for r in rows]
                await con.execute(_CONTENT, row_ids, writes.messages)
                await con.execute(_STEP, execution_id, writes.steps[0])
                await con.execute(_COMPLIANCE, row_ids, ["passed"] * len(rows))
                await con.execute(_STEP, execution_id, writes.steps[1])
                await con.execute(_PAUSE, execution_id)
            else:  # the approval step's result, then send_message, then the output
                await con.execute(_STEP, execution_id, writes.steps[2])
                rows = await con.fetch(_ROWS_TO_SEND, execution_id)
                row_ids = [r["id"] for r in rows]
                phones = [json.loads(r["data"])["phone"] for r in rows]
                bodies = [r["generated_content"] for r in rows]
                sent = await con.fetch(_SANDBOX, row_ids, phones, bodies)
                message_ids = {r["execution_row"]: r["message_id"] for r in sent}
                in_order = [message_ids[row_id] for row_id in row_ids]
                await con.execute(_SENT, row_ids, in_order)
                await con.execute(_STEP, execution_id, writes.steps[3])
                await con.execute(_COMPLETE, execution_id, writes.output_with(in_order))

    started = time.perf_counter()
    await asyncio.gather(*(one(UUID(i)) for i in ids))
    return time.perf_counter() - started


async def _worker_round(
    client: httpx.AsyncClient, headers: dict[str, str], redis: Any, profiler: Any
) -> tuple[list[str], float, float]:
    """50 new executions through the worker: their ids, and the seconds of each drain."""
    ids = await _start_all(client, headers)
    if profiler:
        profiler.enable()
    first = await _drain(redis)  # generate + compliance, then pause for approval
    if profiler:
        profiler.disable()
    await _approve_all(client, headers, ids)
    if profiler:
        profiler.enable()
    second = await _drain(redis)  # send
    if profiler:
        profiler.disable()
    for execution_id in ids:
        status = await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=headers)
        assert status.json()["status"] == "completed", status.text
    return ids, first, second


async def _baseline_round(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    redis: Any,
    connections: Any,
    writes: _WorkerWrites,
) -> float:
    """The bare-asyncpg baseline on 50 new executions (approved in SQL, untimed): seconds."""
    from piccolo_conf import DB

    ids = await _start_all(client, headers)
    await redis.flushdb()  # their run jobs: the baseline does the work instead
    first = await _baseline(connections, ids, "generate", writes)
    await DB.run_ddl(
        "UPDATE execution SET status = 'running', approval_status = 'approved' "
        "WHERE status = 'pending_approval'"
    )
    return first + await _baseline(connections, ids, "send", writes)


async def main(profile: bool, ratios: bool = True, repeat: int = 2) -> dict[str, Any]:
    """Figure 5 and, with `ratios`, 5a and 5b. 5a is measured `repeat` times, alternating
    (worker, baseline, baseline, worker, ...: each pair seconds apart), and each side keeps
    its fastest round, as figures 1-3 and 9 do: on a shared host one slow second would
    otherwise move the ratio by itself."""
    from piccolo_conf import DB

    await start_pool(DB, min_size=20, max_size=20)  # all open before timing, as the baseline's
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
    profiler = cProfile.Profile() if profile else None
    total_rows = EXECUTIONS * ROWS
    async with (
        app.lifespan(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench"
        ) as client,
    ):
        ids, first, second = await _worker_round(client, headers, redis, profiler)
        drains = [(first, second)]
        extra: dict[str, Any] = {}
        if ratios:
            import asyncpg

            dsn = os.environ["DATABASE_URL"]
            writes = await _WorkerWrites.of(dsn, ids[0])
            connections = await asyncpg.create_pool(dsn, min_size=20, max_size=20)

            async def baseline_round() -> float:
                return await _baseline_round(client, headers, redis, connections, writes)

            baselines = [await baseline_round()]
            for r in range(1, max(repeat, 1)):
                if r % 2:  # baseline first, then the worker
                    baselines.append(await baseline_round())
                    drains.append((await _worker_round(client, headers, redis, None))[1:])
                else:
                    drains.append((await _worker_round(client, headers, redis, None))[1:])
                    baselines.append(await baseline_round())
            await connections.close()
            extra["baseline_rows_per_s"] = round(total_rows / min(baselines), 1)
            extra["rounds"] = {
                "worker_rows_per_s": [round(total_rows / (a + b), 1) for a, b in drains],
                "baseline_rows_per_s": [round(total_rows / b, 1) for b in baselines],
            }
            # One worker process, then two, each on 50 new executions.
            machine_before, own_before = _cpu_ticks(), _own_ticks()
            for count in (1, 2):
                proc_ids = await _start_all(client, headers)
                t1 = _drain_processes(count)
                await _approve_all(client, headers, proc_ids)
                t2 = _drain_processes(count)
                extra[f"workers_{count}_rows_per_s"] = round(total_rows / (t1 + t2), 1)
            machine_after, own_after = _cpu_ticks(), _own_ticks()
            total = machine_after[0] - machine_before[0]
            busy = total - (machine_after[1] - machine_before[1])
            # This process and its workers; PostgreSQL and Redis count as "others" here.
            others = max(busy - (own_after - own_before), 0)
            extra["workers_other_cpu_percent"] = round(100 * others / max(total, 1), 1)
    await redis.aclose()
    await DB.close_connection_pool()
    first, second = min(drains, key=sum)
    result = {
        "executions": EXECUTIONS,
        "rows": total_rows,
        "completed": EXECUTIONS,  # every round's executions (asserted in _worker_round)
        "generate_and_check_s": round(first, 3),
        "send_s": round(second, 3),
        "rows_per_s": round(total_rows / (first + second), 1),
        "cpus": os.cpu_count(),
        **extra,
    }
    if ratios:
        result["ratio_to_baseline"] = round(result["rows_per_s"] / extra["baseline_rows_per_s"], 3)
        result["two_workers_ratio"] = round(
            extra["workers_2_rows_per_s"] / extra["workers_1_rows_per_s"], 3
        )
    if profiler:
        out = Path(__file__).resolve().parent / "results" / "worker_profile.txt"
        with out.open("w") as report:
            pstats.Stats(profiler, stream=report).sort_stats("tottime").print_stats(60)
        result["profile"] = str(out)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-ratios", action="store_true", help="figure 5's rows/s alone")
    parser.add_argument(
        "--repeat",
        type=int,
        default=int(os.environ.get("BENCH_REPEAT", "2")),
        help="rounds of 5a, alternating; each side keeps its fastest (BENCH_REPEAT, 2)",
    )
    parser.add_argument("--drain", action="store_true", help=argparse.SUPPRESS)  # a worker
    args = parser.parse_args()
    # On the event loop `flowgate worker` runs on (web.process); the baseline shares it.
    if args.drain:
        process.run(_drain_main())
    else:
        print(json.dumps(process.run(main(args.profile, not args.no_ratios, args.repeat))))
