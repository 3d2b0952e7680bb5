"""The per-process key cache: fewer queries, and a revocation still takes effect within the
cache's lifetime (FLOWGATE_KEY_CACHE_SECONDS)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.factories import PUBLIC, auth, create_key
from web.domain import api_keys
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


async def test_a_revoked_key_stops_working_within_the_cache_lifetime(
    client: httpx.AsyncClient, short_cache: float, cache_clock: SteppedClock
) -> None:
    new = await create_key()
    assert (await client.get(URL, headers=auth(new.secret))).status_code == 404
    await api_keys.revoke_key(new.id)

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
