"""A real HTTP server on 127.0.0.1 (random port) that records webhook requests, and can be told
to fail: answer a status, hang past the client's timeout, drop the connection, or trickle an
answer a byte at a time (each read well inside any per-read timeout, the whole never ending)."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


class Receiver:
    def __init__(self, trickle_every: float = 0.5, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.trickle_every = trickle_every
        self.trickling = 0  # answers being trickled right now
        self._plan: deque[int | str] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    action = receiver._plan.popleft() if receiver._plan else 200
                if action == "hang":
                    receiver._release.wait(30)
                    return
                if action == "trickle":
                    self._trickle()
                    return
                if action == "close":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                status = int(action)
                reply = b'{"ok": true}' if status < 300 else b"receiver says no" * 100
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def _trickle(self) -> None:
                """Headers at once, then one byte of a long body every `trickle_every` s,
                until the client goes away or the receiver stops."""
                self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                with receiver._lock:
                    receiver.trickling += 1
                try:
                    while not receiver._release.wait(receiver.trickle_every):
                        self.wfile.write(b".")
                except OSError:
                    pass  # the client gave up: what a deadline is for
                finally:
                    with receiver._lock:
                        receiver.trickling -= 1

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if tls is not None:  # https: the handshake runs as each connection is accepted
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def respond_with(self, *actions: int | str) -> None:
        """The next requests get these answers in turn (status codes, "hang", "close" or
        "trickle"); after them, 200."""
        with self._lock:
            self._plan.extend(actions)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} requests, got {len(self.requests)}")
            await asyncio.sleep(0.01)
        return list(self.requests)
