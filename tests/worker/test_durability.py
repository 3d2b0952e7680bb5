"""A worker killed in the middle of sending: another one finishes, and no row is sent twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from uuid import UUID

import httpx
from arq.connections import ArqRedis

from tests.factories import PUBLIC, auth, execution_row, rows, start
from web.domain import queue
from web.domain.tables import ExecutionRow, SandboxMessage
from worker.providers.sandbox import SandboxMessenger
from worker.providers.types import OutgoingMessage


async def _sent_rows(execution_id: str) -> int:
    return await ExecutionRow.count().where(
        ExecutionRow.execution == UUID(execution_id), ExecutionRow.send_status == "sent"
    )


async def test_rerun_after_a_worker_is_killed_mid_send_sends_every_row_exactly_once(
    client: httpx.AsyncClient, api_key: str, run_worker, redis: ArqRedis
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(100))
    await run_worker()
    response = await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key)
    )
    assert response.status_code == 200

    # A real worker process, slowed down so that it is caught between two batches of 25.
    env = {
        **os.environ,
        "FLOWGATE_SANDBOX_SEND_DELAY_SECONDS": "0.02",
        "FLOWGATE_EXECUTION_LEASE_SECONDS": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while await _sent_rows(execution_id) < 25:
            assert time.monotonic() < deadline, "the worker never sent its first batch"
            assert process.poll() is None, "the worker process exited early"
            await asyncio.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    sent_when_killed = await _sent_rows(execution_id)
    assert 25 <= sent_when_killed < 100
    assert (await execution_row(execution_id))["status"] == "running"

    # arq hands a job cut off mid-run to another worker once its in-progress marker expires
    # (job timeout + 10 s); expire it now instead of waiting.
    job_id = queue.run_job_id(UUID(execution_id), 2)  # resumed at the approval step
    assert await redis.delete(f"arq:in-progress:{job_id}") == 1

    await run_worker()

    stored = await execution_row(execution_id)
    assert stored["status"] == "completed"
    assert stored["output"]["successCount"] == 100
    assert await _sent_rows(execution_id) == 100
    # Exactly one message per row, and each row's message id is that message's.
    messages = await SandboxMessage.select(SandboxMessage.execution_row, SandboxMessage.message_id)
    assert len(messages) == 100
    assert len({m["execution_row"] for m in messages}) == 100
    by_row = {m["execution_row"]: m["message_id"] for m in messages}
    for row in await ExecutionRow.select(ExecutionRow.id, ExecutionRow.message_id):
        assert row["message_id"] == by_row[row["id"]]


async def test_the_sandbox_records_a_row_once_even_when_asked_twice(
    client: httpx.AsyncClient, api_key: str
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(2))
    row_ids = [
        r["id"]
        for r in await ExecutionRow.select(ExecutionRow.id).where(
            ExecutionRow.execution == UUID(execution_id)
        )
    ]
    messenger = SandboxMessenger("whatsapp")
    outgoing = [OutgoingMessage(row_id, "+911234567890", "hello") for row_id in row_ids]

    first = await messenger.send(outgoing)
    second = await messenger.send(outgoing)

    assert [r.message_id for r in first] == [r.message_id for r in second]
    assert await SandboxMessage.count() == 2
