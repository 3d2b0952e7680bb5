"""Lua scripts on Redis, and a lean client for the calls every public request makes (the
rate-limit script, and the enqueue script of web.domain.queue).

redis-py costs about 100 us of CPU per command here (pool checkout, argument handling, parsing),
which was most of the limiter's price (bench/README.md). This client keeps one connection per
process, writes the commands of one event-loop turn in one go and matches replies in order
(Redis answers in order on a connection), with hiredis parsing. Concurrent requests share the
connection, so it pipelines by itself. Every call gives up within 1.25 x `timeout` seconds
(connecting included); a broken or silent connection fails its callers with redis'
ConnectionError (answered 503) and is reopened by the next call.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError


def _encode(*parts: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Connection(asyncio.Protocol):
    """One connection to Redis. Commands written in the same turn of the event loop go out in
    one write; replies are parsed (hiredis) and handed to their callers in `data_received`
    itself, in order: no reader task, one wake-up per reply.

    Timeouts: Redis answers in order, so only the oldest command can be late. A watchdog looks
    every quarter of `timeout` while commands wait; once the oldest is past its deadline the
    connection is closed and every caller on it gets a ConnectionError (503). No timer per
    command, and a call gives up within 1.25 x `timeout`."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.where = f"Redis at {host}:{port}"
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.parser = hiredis.Reader(replyError=ResponseError)
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.outbox: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
            while (reply := self.parser.gets()) is not False:
                future = self.pending.popleft()[0]
                if future.done():  # its caller was cancelled: the reply is dropped
                    continue
                if isinstance(reply, ResponseError):
                    # Redis still loading its data is unavailable (503), as redis-py says too.
                    loading = str(reply).startswith("LOADING")
                    future.set_exception(BusyLoadingError(str(reply)) if loading else reply)
                else:
                    future.set_result(reply)
        except Exception as exc:  # a protocol error: this connection is done for
            self.close_with(RedisConnectionError(f"{self.where}: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.close_with(RedisConnectionError(f"{self.where} closed the connection"))

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.closed or self.transport is None:
            raise RedisConnectionError(f"{self.where}: connection closed")
        future: asyncio.Future[Any] = self.loop.create_future()
        # Queued and buffered together: replies stay in order.
        self.pending.append((future, self.loop.time() + self.timeout))
        if not self.outbox:
            self.loop.call_soon(self._flush)
        self.outbox.append(command)
        if self.watchdog is None:
            self.watchdog = self.loop.call_later(self.timeout / 4, self._watch)
        return future

    def _flush(self) -> None:
        if self.outbox and not self.closed and self.transport is not None:
            self.transport.write(b"".join(self.outbox))
        self.outbox.clear()

    def _watch(self) -> None:
        self.watchdog = None
        if self.closed or not self.pending:
            return
        if self.pending[0][1] <= self.loop.time():
            self.close_with(
                RedisConnectionError(f"{self.where} did not answer within {self.timeout} s")
            )
            return
        self.watchdog = self.loop.call_later(self.timeout / 4, self._watch)

    def close_with(self, error: Exception) -> None:
        self.closed = True
        self.outbox.clear()
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if self.transport is not None:
            self.transport.close()
        while self.pending:
            future = self.pending.popleft()[0]
            if not future.done():
                future.set_exception(error)


class ScriptClient:
    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.db = int(parts.path.lstrip("/") or 0)
        self.password = unquote(parts.password) if parts.password else None
        self.username = unquote(parts.username) if parts.username else None
        self.timeout = timeout
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()
        self._closed = False

    async def _connect(self) -> _Connection:
        async with self._connecting:
            if self._connection is not None and not self._connection.closed:
                return self._connection
            if self._closed:
                raise RedisConnectionError("client closed")
            loop = asyncio.get_running_loop()
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(self.host, self.port, self.timeout), self.host, self.port
                )
            except OSError as exc:
                raise RedisConnectionError(f"Redis at {self.host}:{self.port}: {exc}") from exc
            setup: list[tuple[str, ...]] = []
            if self.password:
                setup.append(("AUTH", *([self.username] if self.username else []), self.password))
            if self.db:
                setup.append(("SELECT", str(self.db)))
            try:
                for command in setup:
                    await self._send(connection, *command)
            except BaseException:  # refused, timed out or cancelled: never leave it open
                connection.close_with(RedisConnectionError("connection setup failed"))
                raise
            self._connection = connection
            return connection

    async def _send(self, connection: _Connection, *parts: str | bytes) -> Any:
        # A caller that is cancelled cancels the future; the connection then drops its reply.
        return await connection.send(_encode(*parts))

    async def execute(self, *parts: str | bytes) -> Any:
        connection = self._connection
        if connection is None or connection.closed:
            # Connecting, and waiting for another caller's attempt, count against this call's
            # own timeout: a Redis that hangs answers every caller within `timeout`.
            try:
                async with asyncio.timeout(self.timeout):
                    connection = await self._connect()
            except TimeoutError:
                raise RedisConnectionError(
                    f"Redis at {self.host}:{self.port}: no connection within {self.timeout} s"
                ) from None
        return await self._send(connection, *parts)

    async def close(self) -> None:
        self._closed = True
        if self._connection is not None:
            self._connection.close_with(RedisConnectionError("client closed"))
            self._connection = None


@dataclass(frozen=True)
class Script:
    """A Lua script, run by its SHA-1 (the body is sent once per Redis server)."""

    body: str
    # Redis names scripts by SHA-1; not a security use.
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        sha = hashlib.sha1(self.body.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", sha)


async def run_script(
    client: ScriptClient | Redis, script: Script, keys: list[str], args: list[str | bytes]
) -> Any:
    """EVALSHA, and EVAL when Redis does not know the script yet (a new or flushed server).
    Either client: this lean one on the request path, redis-py (arq's pool) elsewhere."""
    execute = client.execute if isinstance(client, ScriptClient) else client.execute_command
    count = str(len(keys))
    try:
        return await execute("EVALSHA", script.sha, count, *keys, *args)
    except ResponseError as exc:
        # redis-py raises its NoScriptError; the lean client the raw "NOSCRIPT …" reply.
        if not (isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")):
            raise
        return await execute("EVAL", script.body, count, *keys, *args)
