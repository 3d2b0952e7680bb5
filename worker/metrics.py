"""The worker's side of the metrics (web.domain.metrics defines them): jobs timed by name and
outcome, providers wrapped so each call is counted and timed, and the HTTP endpoint of each
`flowgate worker` process on FLOWGATE_WORKER_METRICS_PORT.

The endpoint follows the web's rule (a 404 without FLOWGATE_METRICS_TOKEN, 401 without the right
bearer token) and listens on 127.0.0.1 unless FLOWGATE_WORKER_METRICS_HOST says otherwise, as
`flowgate serve` does: a Prometheus on another host needs the address opened and the token,
and the same scrape config (one token) serves the web and the workers alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import uvicorn
from arq import Retry
from redis.asyncio import Redis

from web.domain import metrics
from web.domain.statuses import SendStatus
from web.settings import Settings
from worker.providers.types import (
    ContentProvider,
    Generated,
    Messenger,
    OutgoingMessage,
    ProviderUnusable,
    SendResult,
)

Job = TypeVar("Job", bound=Callable[..., Awaitable[Any]])


def observed_job(job: Job) -> Job:
    """Time each run of `job` and count it by outcome: ok, retry (arq Retry), failed (any
    other exception) or cancelled (shutdown, job timeout)."""
    name = job.__name__

    @functools.wraps(job)
    async def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        outcome = "failed"
        try:
            result = await job(*args, **kwargs)
            outcome = "ok"
            return result
        except Retry:
            outcome = "retry"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            metrics.job_ran(name, outcome, time.perf_counter() - started)

    return cast(Job, run)


class ObservedContent:
    """A content provider whose every `generate` is timed and counted (ok, failed, unusable),
    with the LLM tokens its answer reports."""

    def __init__(self, inner: ContentProvider, name: str) -> None:
        self.inner = inner
        self.name = name
        self.remote = inner.remote
        self.concurrency = inner.concurrency

    async def generate(self, row: dict[str, Any]) -> Generated:
        started = time.perf_counter()
        outcome = "failed"
        try:
            generated = await self.inner.generate(row)
            outcome = "ok"
        except ProviderUnusable:
            outcome = "unusable"
            raise
        finally:
            metrics.provider_call(self.name, "generate", (outcome,), time.perf_counter() - started)
        metrics.llm_tokens(self.name, generated.usage)
        return generated


def _send_outcome(result: SendResult) -> str:
    if result.status == SendStatus.SENT:
        return "sent"
    if result.delivery_unknown:
        return "unknown"
    return "unusable" if result.stop else "failed"


class ObservedMessenger:
    """A messenger whose every `send` call is timed, each message counted by its outcome
    (sent, failed, unknown: delivery state unknown, unusable: the step stops)."""

    def __init__(self, inner: Messenger, name: str) -> None:
        self.inner = inner
        self.name = name
        self.resend_safe = inner.resend_safe
        self.saves_results = inner.saves_results
        self.concurrency = inner.concurrency

    async def wait_turn(self, deadline: float) -> bool:
        return await self.inner.wait_turn(deadline)

    async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        started = time.perf_counter()
        try:
            results = await self.inner.send(messages)
        except Exception:
            seconds = time.perf_counter() - started
            metrics.provider_call(self.name, "send", ["error"] * len(messages), seconds)
            raise
        outcomes = [_send_outcome(result) for result in results]
        metrics.provider_call(self.name, "send", outcomes, time.perf_counter() - started)
        return results


# --- the endpoint ---------------------------------------------------------------------------


def _asgi(settings: Settings, redis: Redis) -> Callable[..., Awaitable[None]]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status, body, extra = 404, b"", []
        content_type = "application/json"
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            refusal = metrics.scrape_refusal(headers.get("authorization"), settings.metrics_token)
            if refusal is None:
                status = 200
                body = metrics.exposition(await metrics.sample_queues(redis))
                content_type = metrics.CONTENT_TYPE
            else:
                status = refusal
                if refusal == 401:
                    extra = [(b"www-authenticate", b"Bearer")]
        if status != 200:
            message, error = metrics.SCRAPE_ERRORS.get(status, ("Not Found", "Not Found"))
            body = json.dumps({"message": message, "error": error, "statusCode": status}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        head = scope["method"] == "HEAD"
        await send({"type": "http.response.body", "body": b"" if head else body})

    return app


class _Server(uvicorn.Server):
    """uvicorn inside the worker's own event loop: the worker handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Endpoint:
    """The metrics endpoint of this worker process, while it runs."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        port = settings.worker_metrics_port
        assert port is not None
        host = settings.worker_metrics_host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as exc:
            self.socket.close()
            raise SystemExit(
                f"FLOWGATE_WORKER_METRICS_PORT: cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        self.socket.listen(64)
        config = uvicorn.Config(
            _asgi(settings, redis),
            log_config=None,
            access_log=False,
            lifespan="off",
            log_level="warning",
        )
        self.server = _Server(config)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.socket]))

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.socket.close()
