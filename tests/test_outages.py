"""PostgreSQL going away under a running web server: 503 in the error shape, quickly, and the
server recovers by itself when the database is back."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live_server import LiveServer, free_port


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not found:
        pytest.skip("PostgreSQL server binaries are not installed")
    return found[-1]


class PrivatePostgres:
    """A throwaway cluster of this test's own (as root, run through the postgres user)."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="flowgate-pg-outage-"))
        os.chmod(self.dir, 0o755)
        self.data = self.dir / "data"
        self.data.mkdir()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.data, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_postgres, str(self.bin / tool), *args],
            check=True, capture_output=True, cwd="/",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.data / "log"), "-w",
                  "-o", options, "start")  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    yield server
    server.remove()


def _flowgate(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "web.cli", *args], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_database_restart_gives_quick_503s_then_recovers(postgres: PrivatePostgres) -> None:
    env = {**os.environ, "DATABASE_URL": postgres.url}
    _flowgate(env, "migrate")
    secret = json.loads(_flowgate(env, "keys", "create", "--name", "outage", "--json"))["key"]
    server = LiveServer(DATABASE_URL=postgres.url).start()
    headers = {"Authorization": f"Bearer {secret}"}
    status_url = (
        f"{server.url}/api/v1/public/executions/00000000-0000-0000-0000-000000000000/status"
    )
    try:
        assert httpx.get(status_url, headers=headers).status_code == 404

        postgres.stop()
        for _ in range(3):
            started = time.monotonic()
            down = httpx.get(status_url, headers=headers, timeout=10)
            assert time.monotonic() - started < 2
            assert down.status_code == 503
            assert down.json() == {
                "message": "Service temporarily unavailable, please retry",
                "error": "Service Unavailable",
                "statusCode": 503,
            }
        health = httpx.get(f"{server.url}/health").json()
        assert health["database"] is False

        postgres.start()
        deadline = time.monotonic() + 15
        codes = []
        while time.monotonic() < deadline:
            codes.append(httpx.get(status_url, headers=headers, timeout=10).status_code)
            if codes[-1] == 404:
                break
            time.sleep(0.2)
        assert codes[-1] == 404, codes
        execute = httpx.post(
            f"{server.url}/api/v1/public/agents/workflow_bfsi_marketing_template/execute",
            json={
                "input": {"csvData": [{"customerId": "C1", "name": "A", "phone": "+918610560986"}]}
            },
            headers=headers,
        )
        assert execute.status_code == 202
    finally:
        server.stop()
