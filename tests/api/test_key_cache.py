"""The per-process key cache: fewer queries, yet a change of the key (revoke, edit, rotation)
takes effect on the very next request (the version the rate limiter checks), and, should that
version be lost with Redis, within the cache's lifetime (FLOWGATE_KEY_CACHE_SECONDS)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from arq.connections import ArqRedis

from tests.factories import PUBLIC, auth, create_key
from tests.live_server import LiveServer
from web.domain import api_keys
from web.domain.actors import Actor
from web.domain.tables import ApiKey
from web.settings import get_settings

URL = f"{PUBLIC}/executions/00000000-0000-0000-0000-000000000000/status"


class SteppedClock:
    """The key cache's seconds clock, moved by the test alone: no timing window."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


@pytest.fixture
def cache_clock() -> Iterator[SteppedClock]:
    stepped = SteppedClock()
    api_keys.KEY_CACHE.monotonic = stepped
    yield stepped
    api_keys.KEY_CACHE.monotonic = time.monotonic


@pytest.fixture
def short_cache(monkeypatch: pytest.MonkeyPatch, cache_clock: SteppedClock) -> Iterator[float]:
    monkeypatch.setenv("FLOWGATE_KEY_CACHE_SECONDS", "0.5")
    get_settings.cache_clear()
    yield 0.5
    monkeypatch.undo()
    get_settings.cache_clear()


async def test_a_revoked_key_stops_on_the_next_request_though_it_is_cached(
    client: httpx.AsyncClient, short_cache: float, redis: ArqRedis
) -> None:
    new = await create_key()
    assert (await client.get(URL, headers=auth(new.secret))).status_code == 404
    assert api_keys.KEY_CACHE.get(api_keys.hash_key(new.secret), short_cache) is not None

    await api_keys.revoke_key(redis, new.id, actor=Actor.system())

    refused = await client.get(URL, headers=auth(new.secret))
    assert refused.status_code == 403
    assert refused.json() == {
        "message": "API key is inactive",
        "error": "Forbidden",
        "statusCode": 403,
    }


async def test_new_limits_apply_to_the_next_request_though_the_key_is_cached(
    client: httpx.AsyncClient, short_cache: float, redis: ArqRedis
) -> None:
    new = await create_key(rate_limit_burst=50)
    first = await client.get(URL, headers=auth(new.secret))
    assert first.headers["x-ratelimit-limit"] == "50"

    await api_keys.update_key(
        redis,
        new.id,
        api_keys.KeySettings(name="test customer", rate_limit_burst=5),
        actor=Actor.system(),
    )

    assert (await client.get(URL, headers=auth(new.secret))).headers["x-ratelimit-limit"] == "5"


async def test_a_rotation_cuts_a_cached_previous_secret_at_once(
    client: httpx.AsyncClient, short_cache: float, redis: ArqRedis
) -> None:
    new = await create_key()
    first = await api_keys.rotate_key(
        redis, new.id, actor=Actor.system()
    )  # the original secret: in its grace period
    assert (await client.get(URL, headers=auth(new.secret))).status_code == 404  # cached
    assert (await client.get(URL, headers=auth(first.secret))).status_code == 404

    await api_keys.rotate_key(
        redis, new.id, actor=Actor.system()
    )  # a previous rotation's old secret stops at once

    assert (await client.get(URL, headers=auth(new.secret))).status_code == 401
    assert (await client.get(URL, headers=auth(first.secret))).status_code == 404  # grace


async def test_a_change_whose_version_redis_lost_still_ends_with_the_cache_lifetime(
    client: httpx.AsyncClient, short_cache: float, cache_clock: SteppedClock
) -> None:
    """The backstop: the key is revoked with no version raised (as when Redis was down at
    the moment of the change, or flushed since)."""
    new = await create_key()
    assert (await client.get(URL, headers=auth(new.secret))).status_code == 404
    await ApiKey.update({ApiKey.active: False}).where(ApiKey.id == new.id)

    # Still served from this process' cache for a moment ...
    assert (await client.get(URL, headers=auth(new.secret))).status_code == 404
    cache_clock.seconds += short_cache - 0.01
    assert (await client.get(URL, headers=auth(new.secret))).status_code == 404  # not yet
    cache_clock.seconds += 0.02

    # ... and refused once the entry is older than FLOWGATE_KEY_CACHE_SECONDS.
    refused = await client.get(URL, headers=auth(new.secret))
    assert refused.status_code == 403
    assert refused.json()["message"] == "API key is inactive"


async def test_unknown_keys_are_never_cached(client: httpx.AsyncClient, short_cache: float) -> None:
    for _ in range(3):
        assert (await client.get(URL, headers=auth("e" * 64))).status_code == 401
    assert api_keys.KEY_CACHE.get(api_keys.hash_key("e" * 64), short_cache) is None


async def test_a_key_revoked_through_the_cli_is_refused_at_once_by_every_web_process(
    db_pool: None,
) -> None:
    """Two real web processes that cache keys for a minute; the CLI revokes the key in a third
    process; the next request to each is refused."""
    new = await create_key(name="shared by two processes")
    servers = [
        await asyncio.to_thread(LiveServer(FLOWGATE_KEY_CACHE_SECONDS="60").start) for _ in range(2)
    ]
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            for server in servers:
                for _ in range(2):  # the second is served from the process' cache
                    response = await http.get(server.url + URL, headers=auth(new.secret))
                    assert response.status_code == 404
            revoked = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "web.cli", "keys", "revoke", str(new.id)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert revoked.returncode == 0, revoked.stderr
            for server in servers:
                refused = await http.get(server.url + URL, headers=auth(new.secret))
                assert refused.status_code == 403
                assert refused.json() == {
                    "message": "API key is inactive",
                    "error": "Forbidden",
                    "statusCode": 403,
                }
                assert "x-ratelimit-remaining" in refused.headers
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)
