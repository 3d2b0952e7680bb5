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


async def _row_ids(execution_id: str) -> list[UUID]:
    """The execution's row ids, in input order."""
    found = (
        await ExecutionRow.select(ExecutionRow.id)
        .where(ExecutionRow.execution == UUID(execution_id))
        .order_by(ExecutionRow.position)
    )
    return [row["id"] for row in found]


async def test_the_sandbox_records_a_row_once_even_when_asked_twice(
    client: httpx.AsyncClient, api_key: str
) -> None:
    row_ids = await _row_ids(await start(client, api_key, csv_data=rows(2)))
    messenger = SandboxMessenger("whatsapp")
    outgoing = [OutgoingMessage(row_id, "+911234567890", "hello") for row_id in row_ids]

    first = await messenger.send(outgoing)
    second = await messenger.send(outgoing)

    assert [r.message_id for r in first] == [r.message_id for r in second]
    assert await SandboxMessage.count() == 2


async def test_the_sandbox_saves_each_rows_result_with_its_message_and_keeps_a_sent_one(
    client: httpx.AsyncClient, api_key: str
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(3))
    row_ids = await _row_ids(execution_id)
    # The first row was sent by an earlier attempt under another message id (a re-run).
    await ExecutionRow.update(
        {ExecutionRow.send_status: "sent", ExecutionRow.message_id: "earlier"}
    ).where(ExecutionRow.id == row_ids[0])
    messenger = SandboxMessenger("whatsapp")

    results = await messenger.send(
        [OutgoingMessage(row_id, "+911234567890", "hello") for row_id in row_ids[1:]]
    )

    assert messenger.saves_results
    saved = (
        await ExecutionRow.select(
            ExecutionRow.id, ExecutionRow.send_status, ExecutionRow.message_id, ExecutionRow.sent_at
        )
        .where(ExecutionRow.execution == UUID(execution_id))
        .order_by(ExecutionRow.position)
    )
    assert [(r["send_status"], r["message_id"]) for r in saved] == [
        ("sent", "earlier"),
        *[("sent", result.message_id) for result in results],
    ]
    assert all(r["sent_at"] is not None for r in saved[1:])
    assert all(result.message_id.startswith("whatsapp_msg_") for result in results)
    # Offered again, every row keeps its first message id, the earlier one too.
    again = await messenger.send(
        [OutgoingMessage(row_id, "+911234567890", "hello") for row_id in row_ids]
    )
    assert [r.message_id for r in again[1:]] == [r.message_id for r in results]
    kept = await ExecutionRow.select(ExecutionRow.message_id).where(ExecutionRow.id == row_ids[0])
    assert kept == [{"message_id": "earlier"}]
