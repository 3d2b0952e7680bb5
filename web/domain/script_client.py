"""Lua scripts on Redis, and a lean client for the calls every public request makes (the
rate-limit script, and the enqueue script of web.domain.queue).

redis-py costs about 100 us of CPU per command here (pool checkout, argument handling, parsing),
which was most of the limiter's price (bench/README.md). This client keeps one connection per
process, writes commands as they come and matches replies in order (Redis answers in order on
a connection), with hiredis parsing. Concurrent requests share the connection, so it
pipelines by itself. Every call gives up after `timeout` seconds; a broken connection fails its
callers with redis' ConnectionError (answered 503) and is reopened by the next call.
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
    """One connection to Redis. Replies are parsed (hiredis) and handed to their callers in
    `data_received` itself, in order: no reader task, one wake-up per reply."""

    def __init__(self, host: str, port: int) -> None:
        self.where = f"Redis at {host}:{port}"
        self.parser = hiredis.Reader(replyError=ResponseError)
        self.pending: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
            while (reply := self.parser.gets()) is not False:
                future = self.pending.popleft()
                if future.done():  # its caller timed out: the reply is dropped
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

    def send(self, command: bytes, future: asyncio.Future[Any]) -> None:
        if self.closed or self.transport is None:
            raise RedisConnectionError(f"{self.where}: connection closed")
        self.pending.append(future)  # appended and written together: replies stay in order
        self.transport.write(command)

    def close_with(self, error: Exception) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        while self.pending:
            future = self.pending.popleft()
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
                    lambda: _Connection(self.host, self.port), self.host, self.port
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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        connection.send(_encode(*parts), future)
        # A timer on the future itself (cheaper than wait_for on this hot path). A caller that
        # is cancelled cancels the future; the connection then drops its reply.
        timer = loop.call_later(self.timeout, self._expire, connection, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, connection: _Connection, future: asyncio.Future[Any]) -> None:
        """No answer in time: the caller gets a ConnectionError (503), and the connection is
        dropped (a half-open one would otherwise time every call out), so the next call dials
        again."""
        if not future.done():
            error = RedisConnectionError(f"Redis did not answer within {self.timeout} s")
            future.set_exception(error)
            connection.close_with(error)

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
