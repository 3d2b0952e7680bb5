"""The real web server (`flowgate serve`: granian, or uvicorn with `server="uvicorn"`) as a
subprocess on 127.0.0.1, for tests that need real HTTP: header limits, fuzzing over the
network, signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    def __init__(self, server: str = "granian", workers: int = 1, **env: str) -> None:
        self.server = server
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        self.process: subprocess.Popen[bytes] | None = None
        self.stderr = b""  # what the server wrote (its JSON log lines), once it has stopped

    def start(self) -> LiveServer:
        command = [sys.executable, "-m", "web.cli", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--server", self.server, "--workers", str(self.workers)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60  # a loaded machine: spawning workers takes a while
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read().decode()  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the web server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=20)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        if self.process.stderr is not None:
            self.stderr = self.process.stderr.read()
            self.process.stderr.close()
        self.process = None
        return code
