"""Which errors mean "PostgreSQL or Redis is unavailable" (503, a job tried again later): those
the database and Redis clients raise when they cannot reach their server, never the same
OSError or TimeoutError raised by other code (a step's file, a provider's own socket)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from web.domain.errors import is_unavailable
from web.domain.script_client import ScriptClient


def _refused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word (a hung server)."""
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def _raised(call: Awaitable[object]) -> BaseException:
    try:
        await call
    except Exception as exc:
        return exc
    raise AssertionError("expected an error")


async def test_postgresql_refusing_or_not_answering_is_unavailable(silent_port: int) -> None:
    refused = await _raised(asyncpg.connect(f"postgresql://u@127.0.0.1:{_refused_port()}/db"))
    silent = await _raised(
        asyncpg.connect(f"postgresql://u@127.0.0.1:{silent_port}/db", timeout=0.2)
    )

    # asyncpg lets the socket's own errors through: plain OSError and TimeoutError.
    assert isinstance(refused, ConnectionRefusedError) and is_unavailable(refused)
    assert isinstance(silent, TimeoutError) and is_unavailable(silent)


async def test_redis_refusing_is_unavailable_through_either_client() -> None:
    port = _refused_port()
    redis_py = Redis(port=port, socket_connect_timeout=1)
    lean = ScriptClient(f"redis://127.0.0.1:{port}/0", timeout=1)
    try:
        assert is_unavailable(await _raised(redis_py.ping()))
        assert is_unavailable(await _raised(lean.execute("PING")))
    finally:
        await redis_py.aclose()
        await lean.close()


async def test_the_same_errors_raised_by_other_code_are_not_unavailable(silent_port: int) -> None:
    async def read_a_missing_file() -> None:
        open("/nonexistent/flowgate/template.txt").close()

    async def time_out() -> None:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(5)

    async def wait_for_a_silent_server() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", silent_port)
        try:
            await asyncio.wait_for(reader.read(1), 0.05)
        finally:
            writer.close()

    errors = [
        await _raised(read_a_missing_file()),
        await _raised(asyncio.open_connection("127.0.0.1", _refused_port())),
        await _raised(time_out()),
        await _raised(wait_for_a_silent_server()),
        OSError("raised by hand"),
    ]
    async with httpx.AsyncClient() as http:
        errors.append(await _raised(http.get(f"http://127.0.0.1:{_refused_port()}/")))

    assert [type(e).__name__ for e in errors] == [
        "FileNotFoundError",
        "ConnectionRefusedError",
        "TimeoutError",
        "TimeoutError",
        "OSError",
        "ConnectError",
    ]
    assert [is_unavailable(e) for e in errors] == [False] * len(errors)
