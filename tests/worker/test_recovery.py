"""Redis loses its queue: the reconciler finds unfinished work in PostgreSQL and queues it
again, so every execution finishes and every webhook event is delivered."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID, uuid4

import httpx
from arq.connections import ArqRedis
from arq.constants import default_queue_name, job_key_prefix

from tests.factories import create_key, execution_row, rows, start
from tests.receiver import Receiver
from web.domain import executions, queue, recovery
from web.domain.tables import WebhookEvent
from worker import jobs
from worker.settings import WorkerSettings


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


async def test_the_reconciler_runs_every_minute_and_when_a_worker_starts(
    client: httpx.AsyncClient, redis: ArqRedis, run_worker: Any, api_key: str
) -> None:
    (job,) = WorkerSettings.cron_jobs
    assert job.coroutine is jobs.reconcile
    assert job.run_at_startup is True
    assert job.second == 0
    execution_id = await start(client, api_key)
    # Redis loses this one queued job (and nothing else).
    job_id = queue.run_job_id(UUID(execution_id), 0)
    assert await redis.zrem(default_queue_name, job_id) == 1
    assert await redis.delete(job_key_prefix + job_id) == 1

    result = await jobs.reconcile({"redis": redis, "settings": _settings(0)})

    assert result == {"executions": 1, "webhook_events": 0}
    assert await redis.zscore(default_queue_name, job_id) is not None
    await run_worker()
    assert (await execution_row(execution_id))["status"] == "pending_approval"


def _settings(stalled_after: float) -> Any:
    import dataclasses

    from web.settings import get_settings

    return dataclasses.replace(get_settings(), stalled_after_seconds=stalled_after)
