"""Redis loses its queue or a worker dies: the reconciler finds unfinished work in PostgreSQL
and queues it again, so every execution finishes and every webhook event is delivered.
(Recovery times with real worker processes: tests/worker/test_recovery_times.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket
import time
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
from arq.connections import ArqRedis
from arq.constants import default_queue_name, in_progress_key_prefix, job_key_prefix

from tests.factories import create_key, execution_row, rows, start
from tests.receiver import Receiver
from web.domain import executions, queue, recovery
from web.domain.tables import ApiKey, Execution, WebhookEvent
from web.domain.workflows import BFSI_WORKFLOW_ID
from web.settings import get_settings
from worker import jobs, reconciler
from worker.settings import WorkerSettings, start_worker, stop_worker


async def test_work_lost_with_redis_is_found_and_finished(
    client: httpx.AsyncClient, redis: ArqRedis, run_worker: Any, receiver: Receiver
) -> None:
    secret = (await create_key(webhook_url=receiver.url)).secret
    queued = await start(client, secret, csv_data=rows(2))  # its job is in Redis
    crashed = await start(client, secret, csv_data=rows(2))
    # A worker claimed this one (recording execution.started) and died before queueing the
    # event or saving a step; its lease has run out.
    claim = await executions.claim(UUID(crashed), uuid4(), lease_seconds=0.001)
    assert claim is not None and claim.events
    await redis.flushdb()  # Redis restarted empty

    requeued = await recovery.requeue_stalled(redis, stalled_after=0)

    assert set(requeued.executions) == {UUID(queued), UUID(crashed)}
    assert requeued.webhook_events == claim.events
    await run_worker()
    for execution_id in (queued, crashed):
        assert (await execution_row(execution_id))["status"] == "pending_approval"
    requests = await receiver.wait_for(4)
    by_execution: dict[str, list[str]] = {}
    for request in requests:
        body = json.loads(request.body)
        by_execution.setdefault(body["executionId"], []).append(body["event"])
    assert by_execution == {
        queued: ["execution.started", "execution.pending_approval"],
        crashed: ["execution.started", "execution.pending_approval"],
    }
    assert await WebhookEvent.count().where(WebhookEvent.status == "delivered") == 4


async def test_queueing_again_is_idempotent_and_leaves_fresh_work_alone(
    client: httpx.AsyncClient, redis: ArqRedis, run_worker: Any, api_key: str
) -> None:
    execution_id = await start(client, api_key)

    fresh = await recovery.requeue_stalled(redis, stalled_after=60)
    assert fresh.executions == [] and fresh.webhook_events == []

    # The job is still queued: queueing it again adds nothing.
    await recovery.requeue_stalled(redis, stalled_after=0)
    await recovery.requeue_stalled(redis, stalled_after=0)
    assert await redis.zcard("arq:queue") == 1
    await run_worker()
    assert (await execution_row(execution_id))["status"] == "pending_approval"


async def test_passes_at_once_queue_lost_work_once_and_report_only_what_they_queued(
    client: httpx.AsyncClient, redis: ArqRedis, run_worker: Any, api_key: str
) -> None:
    execution_id = await start(client, api_key)
    # Redis loses this one queued job (and nothing else).
    lost = queue.run_job_id(UUID(execution_id), 0)
    assert await redis.zrem(default_queue_name, lost) == 1
    assert await redis.delete(job_key_prefix + lost) == 1
    context = {"redis": redis, "settings": _settings(0)}

    # Five workers' reconcilers at the same moment: exactly one queues it.
    passes = await asyncio.gather(*(jobs.reconcile(context) for _ in range(5)))

    assert sorted(p["executions"] for p in passes) == [0, 0, 0, 0, 1]
    again = queue.run_job_id(UUID(execution_id), 0, attempt=1)
    assert again == f"run_execution:{execution_id}:0:1"
    assert await redis.zrange(default_queue_name, 0, -1) == [again.encode()]
    assert (await execution_row(execution_id))["run_attempt"] == 1
    # Its job is now waiting in Redis: the next pass queues nothing and says so.
    assert await jobs.reconcile(context) == {"executions": 0, "webhook_events": 0}
    await run_worker()
    assert (await execution_row(execution_id))["status"] == "pending_approval"


async def test_a_lapsed_lease_is_queued_again_at_once_under_a_job_id_the_dead_job_does_not_hold(
    client: httpx.AsyncClient, redis: ArqRedis, run_worker: Any, api_key: str
) -> None:
    execution_id = UUID(await start(client, api_key))
    dead_job = queue.run_job_id(execution_id, 0)
    # A worker took the job (arq's in-progress marker, kept for the job timeout + 10 s), claimed
    # the run and was killed: its lease has lapsed.
    await redis.set(in_progress_key_prefix + dead_job, b"1", px=310_000)
    assert await executions.claim(execution_id, uuid4(), lease_seconds=0.001) is not None
    await asyncio.sleep(0.01)

    # Even with a long stall window: a lapsed lease is enough.
    requeued = await recovery.requeue_stalled(redis, stalled_after=60)

    assert requeued == recovery.Requeued([execution_id], [])
    again = queue.run_job_id(execution_id, 0, attempt=1)
    assert set(await redis.zrange(default_queue_name, 0, -1)) == {
        dead_job.encode(),
        again.encode(),
    }
    # The dead job stays where arq keeps it; the new one runs the execution now.
    await redis.zrem(default_queue_name, dead_job)  # (else a burst worker waits 310 s for it)
    await run_worker()
    assert (await execution_row(execution_id))["status"] == "pending_approval"


async def test_a_job_taken_by_a_worker_that_died_before_claiming_the_run_is_replaced(
    client: httpx.AsyncClient, redis: ArqRedis, api_key: str
) -> None:
    execution_id = UUID(await start(client, api_key))
    await redis.set(in_progress_key_prefix + queue.run_job_id(execution_id, 0), b"1", px=310_000)

    assert await recovery.requeue_stalled(redis, stalled_after=60) == recovery.Requeued([], [])
    requeued = await recovery.requeue_stalled(redis, stalled_after=0)

    assert requeued == recovery.Requeued([execution_id], [])
    assert await redis.zscore(default_queue_name, queue.run_job_id(execution_id, 0, 1))


async def test_the_reconcilers_query_reads_only_unfinished_runs_through_its_partial_index(
    client: httpx.AsyncClient, api_key: str
) -> None:
    # A table as it grows: thousands of finished runs, a few unfinished ones.
    key = (await ApiKey.select(ApiKey.id).first())["id"]
    for _ in range(3):
        await start(client, api_key)
    await Execution.raw(
        "INSERT INTO execution (id, workflow, api_key, status) "
        "SELECT gen_random_uuid(), {}, {}, 'completed' FROM generate_series(1, 5000)",
        BFSI_WORKFLOW_ID,
        key,
    )
    connection = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        await connection.execute("ANALYZE execution")
        sql = recovery._STALLED_EXECUTIONS.replace("{}", "5")
        plan = "\n".join(r[0] for r in await connection.fetch(f"EXPLAIN {sql}"))
    finally:
        await connection.close()
    assert "Index Scan using execution_unfinished on execution" in plan, plan
    assert "Sort" not in plan, plan


async def test_every_worker_runs_the_reconciler_at_start_and_every_few_seconds(
    client: httpx.AsyncClient, redis: ArqRedis, api_key: str
) -> None:
    assert WorkerSettings.on_startup is start_worker
    assert WorkerSettings.on_shutdown is stop_worker
    # Not an arq cron job (the cron jobs are the purges).
    assert [job.name for job in getattr(WorkerSettings, "cron_jobs", [])] == [
        "cron:purge_idempotency_answers",
        "cron:purge_audit_entries",
        "cron:purge_whatsapp_notifications",
        "cron:purge_personal_data",
    ]
    assert all(1.0 <= reconciler.next_wait(2.0) <= 2.0 for _ in range(100))
    execution_id = UUID(await start(client, api_key))
    context: dict[str, Any] = {"redis": redis, "settings": _settings(0, interval=0.2)}
    reconciler.start(context)
    try:
        for _ in range(3):  # lost three times: each time queued again by a later pass
            await redis.flushdb()
            deadline = time.monotonic() + 10
            while not await redis.zcard(default_queue_name):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    finally:
        await reconciler.stop(context)
    assert "reconciler" not in context
    assert (await execution_row(execution_id))["run_attempt"] == 3


def _settings(stalled_after: float, interval: float = 5.0) -> Any:
    return dataclasses.replace(
        get_settings(), stalled_after_seconds=stalled_after, reconcile_interval_seconds=interval
    )


async def test_a_reconciler_that_cannot_reach_redis_says_so_in_one_line_and_keeps_going(
    client: httpx.AsyncClient, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    await start(client, api_key)
    unreachable = ArqRedis.from_url(f"redis://127.0.0.1:{_closed_port()}/0")
    context: dict[str, Any] = {"redis": unreachable, "settings": _settings(0, interval=0.1)}
    caplog.set_level(logging.WARNING, logger="flowgate.reconciler")
    reconciler.start(context)
    try:
        deadline = time.monotonic() + 10
        while len(caplog.records) < 3:  # pass after pass, each one line
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        task = context["reconciler"]
        assert not task.done()
    finally:
        await reconciler.stop(context)
        await unreachable.aclose()
    assert {r.getMessage() for r in caplog.records} == {
        "reconciler: PostgreSQL or Redis unreachable, trying again soon"
    }
    assert all(r.exc_info is None for r in caplog.records)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
