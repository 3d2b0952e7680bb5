"""Bad input against the real server: schemathesis over the served OpenAPI schema (bounded to
about a minute), and hand-written cases that only a real HTTP server can receive."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import create_key, start
from tests.live_server import LiveServer

FUZZ_SECONDS = int(os.environ.get("FLOWGATE_FUZZ_SECONDS", "45"))
# A fixed seed keeps CI repeatable; FLOWGATE_FUZZ_SEED=random explores new cases locally.
FUZZ_SEED = os.environ.get("FLOWGATE_FUZZ_SEED", "20261125")


@pytest.fixture
def live_server(db_pool: None) -> Iterator[LiveServer]:
    # A configured WhatsApp webhook: unsigned fuzz bodies then meet its 401, not the 503 of a
    # server that has no app secret (which schemathesis counts as a server error).
    server = LiveServer(FLOWGATE_WHATSAPP_APP_SECRET="fuzz-app-secret").start()
    yield server
    server.stop()


async def _unlimited_key() -> str:
    new = await create_key(
        name="fuzz",
        monthly_limit=1_000_000_000,
        rate_limit_burst=1_000_000_000,
        rate_limit_refill_per_second=1_000_000.0,
    )
    return new.secret


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    live_server: LiveServer,
    client: httpx.AsyncClient,
    run_worker: Any,
    tmp_path: Path,
) -> None:
    secret = await _unlimited_key()
    execution_id = await start(client, secret)
    await run_worker()  # waiting for approval: every operation has something real to act on
    (tmp_path / "schemathesis.toml").write_text(
        "[parameters]\n"
        '"path.workflow_id" = "workflow_bfsi_marketing_template"\n'
        f'"path.execution_id" = "{execution_id}"\n'
    )
    binary = shutil.which("schemathesis", path=os.path.dirname(sys.executable))
    assert binary, "schemathesis is a dev dependency"

    result = subprocess.run(
        [
            binary, "run", f"{live_server.url}/schema/openapi.json",
            "-H", f"Authorization: Bearer {secret}",
            "--max-time", str(FUZZ_SECONDS),
            "--checks", "all",
            # A schema-valid body may still lack the fields a workflow requires (customerId,
            # name, phone for BFSI): those rules live in the workflow, not in the schema.
            "--exclude-checks", "positive_data_acceptance",
            "--warnings", "off",
            *([] if FUZZ_SEED == "random" else ["--seed", FUZZ_SEED]),
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=FUZZ_SECONDS + 60, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "generated" in result.stdout


def _raw_request(port: int, request: bytes) -> bytes:
    """Send `request` and return the head of the answer (b"" when the server hung up without
    one). Sending stops as soon as the server answers: a server that refuses a request early
    answers before it has read it all, and closing with unread data would reset the connection
    and lose the answer on our side."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        rest = memoryview(request)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while rest and not select.select([sock], [], [], 0)[0]:
                rest = rest[sock.send(rest[:65536]) :]
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer:
                    break
    return answer


async def test_a_10_mb_header_is_refused_and_the_server_stays_up(
    live_server: LiveServer,
) -> None:
    secret = await _unlimited_key()
    header = b"X-Padding: " + b"a" * (10 * 1024 * 1024) + b"\r\n"
    request = (
        b"GET /api/v1/public/executions/x/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + header
        + f"Authorization: Bearer {secret}\r\n\r\n".encode()
    )
    answer = _raw_request(live_server.port, request)
    # A refusal is an answer: a connection dropped without one is a failure, not a refusal.
    assert answer.startswith(b"HTTP/1.1 "), f"no answer, the connection was dropped: {answer!r}"
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500

    after = httpx.get(
        f"{live_server.url}/api/v1/public/executions/x/status",
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert after.status_code == 404


def test_a_dropped_connection_is_no_answer_not_a_refusal() -> None:
    """The helper above tells a server that hangs up (b"") from one that answers, so the
    oversized-header test fails on a dropped connection instead of counting it as a refusal."""
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def hang_up() -> None:
            connection, _ = listener.accept()
            connection.recv(1024)
            linger_zero = struct.pack("ii", 1, 0)
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
            connection.close()  # a reset, with no answer

        thread = threading.Thread(target=hang_up)
        thread.start()
        answer = _raw_request(listener.getsockname()[1], b"GET / HTTP/1.1\r\n" + b"a" * 1_000_000)
        thread.join(timeout=10)

    assert answer == b""
