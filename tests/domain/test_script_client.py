"""The lean Redis client of the request path (web.domain.script_client) when Redis misbehaves:
every call gives up within its timeout with a ConnectionError (answered 503), no connection is
left open behind it, and the next call after a failure dials again.

A Redis that hangs or answers LOADING cannot be made on demand from a real one, so those cases
use a stand-in TCP server on 127.0.0.1; reconnecting is checked against the real Redis."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from web.domain.script_client import ScriptClient

TIMEOUT = 0.2


class StandIn:
    """Accepts connections and answers each command with `reply(command)`, or never."""

    def __init__(self, reply: Callable[[bytes], bytes | None]) -> None:
        self.reply = reply
        self.connections = 0
        self.open: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open.add(writer)
        try:
            while data := await reader.read(65536):
                answer = self.reply(data)
                if answer is not None:
                    writer.write(answer)
        finally:
            self.open.discard(writer)
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[StandIn], asyncio.Future[str]]]:
    servers: list[asyncio.Server] = []

    async def start(stand_in: StandIn) -> str:
        server = await asyncio.start_server(stand_in.handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/1"  # DB 1: every connection sends SELECT first

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


async def test_a_redis_that_never_answers_fails_every_caller_within_the_timeout(
    serve: Callable[[StandIn], asyncio.Future[str]],
) -> None:
    silent = StandIn(lambda _: None)
    client = ScriptClient(await serve(silent), TIMEOUT)
    started = time.monotonic()

    results = await asyncio.gather(
        *(client.execute("PING") for _ in range(10)), return_exceptions=True
    )

    assert all(isinstance(result, RedisConnectionError) for result in results), results
    assert time.monotonic() - started < 2 * TIMEOUT  # all together, not one after another
    await asyncio.sleep(0.05)
    assert silent.open == set()  # the half-made connection was closed, not leaked
    await client.close()


async def test_a_call_that_times_out_drops_the_connection_and_the_next_one_dials_again(
    serve: Callable[[StandIn], asyncio.Future[str]],
) -> None:
    answers = {"hang": False}

    def reply(command: bytes) -> bytes | None:
        if b"SELECT" in command:
            return b"+OK\r\n"
        return None if answers["hang"] else b"+PONG\r\n"

    stand_in = StandIn(reply)
    client = ScriptClient(await serve(stand_in), TIMEOUT)
    assert await client.execute("PING") == b"PONG"

    answers["hang"] = True
    with pytest.raises(RedisConnectionError):
        await client.execute("PING")
    answers["hang"] = False

    assert await client.execute("PING") == b"PONG"
    assert stand_in.connections == 2
    await client.close()


async def test_redis_still_loading_is_a_connection_error(
    serve: Callable[[StandIn], asyncio.Future[str]],
) -> None:
    def reply(command: bytes) -> bytes:
        if b"SELECT" in command:
            return b"+OK\r\n"
        return b"-LOADING Redis is loading the dataset in memory\r\n"

    client = ScriptClient(await serve(StandIn(reply)), TIMEOUT)

    with pytest.raises(RedisConnectionError, match="LOADING"):
        await client.execute("PING")
    await client.close()


async def test_a_refused_select_closes_the_connection_and_fails_the_call(
    serve: Callable[[StandIn], asyncio.Future[str]],
) -> None:
    stand_in = StandIn(lambda _: b"-ERR DB index is out of range\r\n")
    client = ScriptClient(await serve(stand_in), TIMEOUT)

    with pytest.raises(Exception, match="DB index is out of range"):
        await client.execute("PING")

    await asyncio.sleep(0.05)
    assert stand_in.open == set()
    await client.close()


async def test_after_redis_drops_the_connection_the_next_call_reconnects(redis: Redis) -> None:
    client = ScriptClient(os.environ["REDIS_URL"], 1.0)
    await client.execute("CLIENT", "SETNAME", "script-client-test")
    own_id = await client.execute("CLIENT", "ID")

    assert await redis.execute_command("CLIENT", "KILL", "ID", str(own_id)) == 1
    await asyncio.sleep(0.05)

    assert await client.execute("PING") == b"PONG"
    await client.close()
    with pytest.raises(RedisConnectionError):
        await client.execute("PING")
