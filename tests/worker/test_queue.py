"""web.domain.queue writes jobs the way arq's own enqueue_job does, with one Lua script: arq
reads them back as its own, and a job id that is queued or has a result is not queued again."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from arq.connections import ArqRedis
from arq.constants import default_queue_name, job_key_prefix, result_key_prefix
from arq.jobs import Job, JobStatus

from web.domain import queue
from web.domain.script_client import ScriptClient

DAY_MS = 86_400_000


@pytest.fixture(params=["arq's redis-py pool", "the app's lean script client"])
async def client(request: pytest.FixtureRequest, redis: ArqRedis) -> AsyncIterator[object]:
    if request.param.startswith("arq"):
        yield redis
        return
    lean = ScriptClient(os.environ["REDIS_URL"], timeout=2)
    yield lean
    await lean.close()


@pytest.fixture
async def job_id(redis: ArqRedis) -> AsyncIterator[str]:
    job_id = f"queue-test:{time.time_ns()}"
    yield job_id
    await redis.delete(job_key_prefix + job_id, result_key_prefix + job_id)
    await redis.zrem(default_queue_name, job_id)


async def test_arq_reads_an_enqueued_job_as_its_own(
    client: ScriptClient | ArqRedis, redis: ArqRedis, job_id: str
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)

    assert await queue.enqueue(client, "deliver_webhook", job_id, "an-argument") is True

    job = Job(job_id, redis)
    assert await job.status() == JobStatus.queued
    info = await job.info()
    assert info is not None
    assert (info.function, info.args, info.kwargs, info.job_try) == (
        "deliver_webhook",
        ("an-argument",),
        {},
        None,
    )
    assert before <= info.enqueue_time <= datetime.now(UTC)
    score = await redis.zscore(default_queue_name, job_id)
    assert score == int(info.enqueue_time.timestamp() * 1000)
    assert DAY_MS - 60_000 < await redis.pttl(job_key_prefix + job_id) <= DAY_MS
    # arq's own enqueue sees it too, and refuses the same id.
    assert await redis.enqueue_job("deliver_webhook", "other", _job_id=job_id) is None


async def test_the_same_job_id_is_queued_once(
    client: ScriptClient | ArqRedis, redis: ArqRedis, job_id: str
) -> None:
    assert await queue.enqueue(client, "deliver_webhook", job_id, "first") is True
    assert await queue.enqueue(client, "deliver_webhook", job_id, "second") is False

    assert await redis.zcount(default_queue_name, "-inf", "+inf") == 1
    info = await Job(job_id, redis).info()
    assert info is not None and info.args == ("first",)


async def test_a_job_id_with_a_result_is_not_queued_again(
    client: ScriptClient | ArqRedis, redis: ArqRedis, job_id: str
) -> None:
    await redis.set(result_key_prefix + job_id, b"a finished job's result")

    assert await queue.enqueue(client, "deliver_webhook", job_id, "again") is False

    assert await redis.zscore(default_queue_name, job_id) is None
    assert not await redis.exists(job_key_prefix + job_id)
