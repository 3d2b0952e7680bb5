"""Receivers that answer slowly: each attempt has one deadline, however the answer trickles in,
and goes through the normal retry schedule; deliveries have their own queue and worker loop,
so twenty such receivers do not slow another customer's run (issue 12, item 4)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from arq.constants import default_queue_name, job_key_prefix

from tests.factories import create_key, execution_row, start
from tests.receiver import Receiver
from web.domain import queue, recovery, webhooks
from web.domain.actors import Actor
from web.domain.tables import WebhookAttempt, WebhookEvent
from web.settings import get_settings


async def test_a_trickling_answer_is_cut_at_the_deadline_and_retried_on_schedule_then_failed(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    # A byte every 0.5 s: no single read ever waits 2 s, the answer never ends.
    receiver.respond_with("trickle", "trickle", "trickle", "trickle")
    secret = (
        await create_key(webhook_url=receiver.url, webhook_events=["execution.started"])
    ).secret
    settings = dataclasses.replace(get_settings(), webhook_timeout_seconds=2.0)

    await start(client, secret)
    async with asyncio.timeout(60):  # generous: 4 attempts of 2 s and 2.1 s of delays
        await run_worker(settings=settings)

    events = await WebhookEvent.select(WebhookEvent.status, WebhookEvent.attempts)
    assert events == [{"status": "failed", "attempts": 4}]
    attempts = await WebhookAttempt.select().order_by(WebhookAttempt.attempt_number)
    assert [(a["attempt_number"], a["status_code"], a["error"]) for a in attempts] == [
        (n, None, "Timed out after 2 s") for n in (1, 2, 3, 4)
    ]
    for attempt in attempts:
        assert 1900 <= attempt["duration_ms"] < 4000  # at the deadline, not at arq's job timeout
    assert len(receiver.requests) == 4


async def test_an_endless_answer_is_read_only_up_to_the_stored_kilobyte(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    receiver.trickle_every = 0  # a fast, endless body: the cap ends the read, not the clock
    receiver.respond_with("trickle")
    secret = (
        await create_key(webhook_url=receiver.url, webhook_events=["execution.started"])
    ).secret

    await start(client, secret)
    await run_worker()

    (attempt,) = await WebhookAttempt.select()
    assert (attempt["status_code"], attempt["error"]) == (200, None)
    assert attempt["response_body"] == "." * 1024
    assert attempt["duration_ms"] < 900  # the deadline is 1 s in tests: the cap ended it
    assert await WebhookEvent.select(WebhookEvent.status) == [{"status": "delivered"}]


@pytest.fixture
def slow_receiver() -> Iterator[Receiver]:
    server = Receiver(trickle_every=0.5).start()
    yield server
    server.stop()


async def _time_to_approval(client: httpx.AsyncClient, secret: str) -> float:
    """Seconds from the execute request to the run waiting for approval (polled every 20 ms)."""
    began = time.monotonic()
    execution_id = await start(client, secret)
    async with asyncio.timeout(60):
        while (await execution_row(execution_id))["status"] != "pending_approval":
            await asyncio.sleep(0.02)
    return time.monotonic() - began


async def test_twenty_trickling_receivers_do_not_slow_another_customers_run(
    client: httpx.AsyncClient, slow_receiver: Receiver
) -> None:
    # One real `flowgate worker` with the default 10 s deadline: the 20 deliveries hold their
    # slots for the whole measurement.
    env = {**os.environ, "FLOWGATE_WEBHOOK_TIMEOUT_SECONDS": "10"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        other = (await create_key(name="another customer")).secret
        await _time_to_approval(client, other)  # the worker is up and warm
        alone = min([await _time_to_approval(client, other) for _ in range(3)])

        slow_receiver.respond_with(*["trickle"] * 100)
        hooked = (
            await create_key(
                name="slow receiver",
                webhook_url=slow_receiver.url,
                webhook_events=["execution.started"],
            )
        ).secret
        for _ in range(20):
            await start(client, hooked)
        async with asyncio.timeout(30):
            while slow_receiver.trickling < 20:
                await asyncio.sleep(0.05)

        beside_slow_receivers = max([await _time_to_approval(client, other) for _ in range(3)])

        print(
            f"run alone {alone:.3f} s, beside 20 trickling receivers {beside_slow_receivers:.3f} s"
        )
        assert slow_receiver.trickling == 20  # still all held while the runs went through
        assert beside_slow_receivers <= alone + 1.0, (alone, beside_slow_receivers)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            # Both loops stop: the deliveries end at their 10 s deadline, the runs are idle.
            assert worker.wait(timeout=30) == 0
        finally:
            if worker.poll() is None:
                worker.kill()


async def test_every_delivery_is_queued_on_the_deliveries_own_queue(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any, redis: ArqRedis
) -> None:
    secret = (
        await create_key(webhook_url=receiver.url, webhook_events=["execution.started"])
    ).secret
    await start(client, secret)
    await run_worker()  # the outbox's enqueue: delivered by the deliveries' loop
    event = await WebhookEvent.select(WebhookEvent.id, WebhookEvent.status).first()
    assert event is not None and event["status"] == "delivered"
    job_id = queue.webhook_job_id(event["id"])

    await webhooks.redeliver_event(
        redis, event["id"], actor=Actor.system()
    )  # the dashboard's and the CLI's
    assert await redis.zscore(queue.WEBHOOK_QUEUE, job_id) is not None
    assert await redis.zscore(default_queue_name, job_id) is None

    # Redis loses it; the reconciler queues it again, on the same queue.
    await redis.zrem(queue.WEBHOOK_QUEUE, job_id)
    await redis.delete(job_key_prefix + job_id)
    requeued = await recovery.requeue_stalled(redis, stalled_after=0)
    assert requeued.webhook_events == [event["id"]]
    assert await redis.zscore(queue.WEBHOOK_QUEUE, job_id) is not None
    assert await redis.zcard(default_queue_name) == 0
    await run_worker()
    assert len(await receiver.wait_for(2)) == 2
