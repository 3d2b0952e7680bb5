"""Graceful shutdown: SIGTERM to a web server lets the request in flight finish; SIGTERM to a
worker lets the current job finish or leaves it to be run again. Nothing is lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any
from uuid import UUID

import httpx
import pytest

from tests.factories import PUBLIC, auth, create_key, execution_row, rows, start
from tests.live_server import LiveServer
from web.cli import SERVERS
from web.domain.tables import ExecutionRow, SandboxMessage


@pytest.mark.parametrize("server_name", SERVERS)
async def test_sigterm_lets_the_request_in_flight_finish(db_pool: None, server_name: str) -> None:
    secret = (await create_key()).secret
    server = LiveServer(server_name).start()
    body = json.dumps({"input": {"csvData": rows(50)}}).encode()
    head = (
        "POST /api/v1/public/agents/workflow_bfsi_marketing_template/execute HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {secret}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(head + body[:100])  # the request is in flight ...
        await asyncio.sleep(0.3)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)  # ... when the server is told to stop
        await asyncio.sleep(0.3)
        sock.sendall(body[100:])
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
    # It then stops by itself (0, or -15 where the server re-raises the signal once shut down).
    assert server.process.wait(timeout=15) in (0, -signal.SIGTERM)
    execution_id = json.loads(answer.split(b"\r\n\r\n", 1)[1])["executionId"]
    assert (await execution_row(execution_id))["row_count"] == 50


async def test_sigterm_to_a_worker_mid_send_loses_nothing_and_sends_nothing_twice(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(100))
    await run_worker()
    await client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key))
    env = {**os.environ, "FLOWGATE_SANDBOX_SEND_DELAY_SECONDS": "0.02"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while (
            await ExecutionRow.count().where(
                ExecutionRow.execution == UUID(execution_id), ExecutionRow.send_status == "sent"
            )
            < 25
        ):
            assert time.monotonic() < deadline and worker.poll() is None
            await asyncio.sleep(0.02)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()

    await run_worker()  # whatever the stopped worker left (nothing, or a re-queued job)

    stored = await execution_row(execution_id)
    assert stored["status"] == "completed"
    assert stored["output"]["successCount"] == 100
    assert await SandboxMessage.count() == 100
