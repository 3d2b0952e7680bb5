"""`make run` (scripts/run.sh) with its port already taken by another program: it says so and
stops before the banner, instead of announcing a server that then dies."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class _Other(BaseHTTPRequestHandler):
    """Another program on the port: it even answers /health with 200."""

    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_program() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Other)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_a_port_in_use_fails_before_the_banner(other_program: int) -> None:
    result = subprocess.run(
        ["scripts/run.sh"],
        cwd=ROOT,
        env={**os.environ, "FLOWGATE_PORT": str(other_program)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert f"port {other_program} is in use: set FLOWGATE_PORT" in result.stderr
    assert "flowgate is running" not in result.stdout
    assert "Traceback" not in result.stderr
