"""Provider limits shared by every worker: two real `flowgate worker` processes, each running an
execution of its own, against fake providers on 127.0.0.1 that enforce the limit (a token
bucket; 429 + Retry-After past it) and count what they accepted and refused. Together the two
workers stay under the account's limit, near it, and a 429 to one of them slows both.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis

from tests.factories import PUBLIC, auth, execution_row, rows, start
from tests.fake_providers import FakeChatCompletions, FakeWhatsAppCloud, Reply
from tests.worker.test_recovery_times import WorkerProcess
from web.domain import provider_limits
from web.domain.provider_limits import Bucket
from web.domain.workflows import BFSI_TEMPLATE, save_workflow

LLM_KEY_ENV = "FLOWGATE_TEST_LLM_API_KEY"
WHATSAPP_TOKEN_ENV = "FLOWGATE_TEST_WHATSAPP_TOKEN"
WORKFLOW_ID = "workflow_provider_limits"


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


@pytest.fixture
def whatsapp(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWhatsAppCloud]:
    token = "EAAG" + secrets.token_urlsafe(24)
    monkeypatch.setenv(WHATSAPP_TOKEN_ENV, token)  # the worker processes inherit it
    server = FakeWhatsAppCloud(token).start()
    yield server
    server.stop()


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeChatCompletions]:
    key = "sk-test-" + secrets.token_urlsafe(24)
    monkeypatch.setenv(LLM_KEY_ENV, key)
    server = FakeChatCompletions(key).start()
    yield server
    server.stop()


async def _workflow(
    whatsapp: FakeWhatsAppCloud | None = None,
    llm: FakeChatCompletions | None = None,
    **limits: Any,
) -> None:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = WORKFLOW_ID
    definition["name"] = "BFSI under provider limits"
    if llm is not None:
        definition["steps"][0]["settings"] = {
            "provider": "openai_compatible",
            "base_url": llm.url,
            "model": llm.model,
            "api_key_env": LLM_KEY_ENV,
            "prompt_template": "Offer for {{ name }} ({{ customerId }}).",
            "max_tokens": 60,
            "concurrency": 8,
            **{k: v for k, v in limits.items() if k in ("requestsPerMinute", "tokensPerMinute")},
        }
    if whatsapp is not None:
        definition["steps"][3]["settings"] = {
            "channel": "whatsapp",
            "provider": "whatsapp_cloud",
            "base_url": whatsapp.url,
            "phone_number_id": whatsapp.phone_number_id,
            "access_token_env": WHATSAPP_TOKEN_ENV,
            "concurrency": 8,
            **{k: v for k, v in limits.items() if k == "messagesPerSecond"},
        }
    await save_workflow(definition)


def _rows(count: int, series: int) -> list[dict[str, Any]]:
    """Rows whose phone numbers tell the execution (`series`) apart at the fake provider."""
    return [dict(r, phone=f"+91861{series:02d}{i:05d}") for i, r in enumerate(rows(count))]


async def _until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)


async def _status(execution_id: str, status: str) -> bool:
    return bool((await execution_row(execution_id))["status"] == status)


async def _leased(execution_id: str) -> bool:
    return (await execution_row(execution_id))["lease_token"] is not None


async def _two_workers(workers: list[WorkerProcess]) -> tuple[WorkerProcess, WorkerProcess]:
    a, b = WorkerProcess(), WorkerProcess()
    workers += [a, b]
    await a.ready()
    await b.ready()
    return a, b


async def _one_each(
    a: WorkerProcess,
    b: WorkerProcess,
    first: Callable[[], Awaitable[str]],
    second: Callable[[], Awaitable[str]],
) -> tuple[str, str]:
    """Start two pieces of work so that `a` takes the first and `b` the second: the other
    worker is paused (SIGSTOP) until its peer has claimed the run."""
    b.signal(signal.SIGSTOP)
    try:
        one = await first()
        await _until(lambda: _leased(one), 30, "claimed by the first worker")
    finally:
        b.signal(signal.SIGCONT)
    a.signal(signal.SIGSTOP)
    try:
        two = await second()
        await _until(lambda: _leased(two), 30, "claimed by the second worker")
    finally:
        a.signal(signal.SIGCONT)
    return one, two


async def _approve(client: httpx.AsyncClient, api_key: str, execution_id: str) -> str:
    response = await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve", json={}, headers=auth(api_key)
    )
    assert response.status_code == 200, response.text
    return execution_id


async def _sending_on_two_workers(
    client: httpx.AsyncClient, api_key: str, workers: list[WorkerProcess], count: int
) -> tuple[WorkerProcess, WorkerProcess, str, str]:
    a, b = await _two_workers(workers)
    ids = [
        await start(client, api_key, csv_data=_rows(count, n), workflow_id=WORKFLOW_ID)
        for n in (1, 2)
    ]
    for execution_id in ids:
        await _until(lambda e=execution_id: _status(e, "pending_approval"), 60, "generated")
    one, two = await _one_each(
        a, b, lambda: _approve(client, api_key, ids[0]), lambda: _approve(client, api_key, ids[1])
    )
    return a, b, one, two


async def _completed(*execution_ids: str, timeout: float) -> None:
    for execution_id in execution_ids:
        await _until(lambda e=execution_id: _status(e, "completed"), timeout, "completed")


def _ran_on(worker: WorkerProcess, execution_id: str) -> bool:
    return f"execution {execution_id} completed" in worker.log


async def test_two_workers_sharing_a_whatsapp_number_stay_under_its_limit_and_near_it(
    client: httpx.AsyncClient,
    api_key: str,
    whatsapp: FakeWhatsAppCloud,
    workers: list[WorkerProcess],
) -> None:
    whatsapp.enforce_limit(20)
    await _workflow(whatsapp, messagesPerSecond=20)
    a, b, one, two = await _sending_on_two_workers(client, api_key, workers, 100)
    await _completed(one, two, timeout=60)

    assert _ran_on(a, one) and _ran_on(b, two)
    assert whatsapp.problems == []
    assert len(whatsapp.sent) == 200
    assert whatsapp.refused_after(1.0) == 0
    assert len(whatsapp.refused) <= 2  # 1 %
    rate = whatsapp.accepted_rate(skip=0.2)
    print(f"\nWhatsApp at 20 msg/s, 2 workers: {rate:.1f} msg/s, 0 refused")
    assert 0.9 * 20 <= rate <= 20 * 1.1
    for execution_id in (one, two):
        stored = await execution_row(execution_id)
        assert stored["output"]["successCount"] == 100


async def test_two_workers_sharing_an_llm_account_stay_under_its_request_limit(
    client: httpx.AsyncClient,
    api_key: str,
    llm: FakeChatCompletions,
    workers: list[WorkerProcess],
) -> None:
    llm.enforce_limit(5)  # 300 requests a minute
    llm.ratelimit_headers = True
    await _workflow(llm=llm, requestsPerMinute=300, tokensPerMinute=1_000_000)
    a, b = await _two_workers(workers)
    one, two = await _one_each(
        a,
        b,
        lambda: start(client, api_key, csv_data=_rows(25, 1), workflow_id=WORKFLOW_ID),
        lambda: start(client, api_key, csv_data=_rows(25, 2), workflow_id=WORKFLOW_ID),
    )
    for execution_id in (one, two):
        await _until(lambda e=execution_id: _status(e, "pending_approval"), 60, "generated")

    assert f"execution {one} waits for approval" in a.log
    assert f"execution {two} waits for approval" in b.log
    assert llm.problems == []
    assert len(llm.accepted) == 50
    assert llm.refused == []
    rate = llm.accepted_rate(skip=0.2)  # past the pauses that put each run on its worker
    print(f"\nLLM at 300 requests/min, 2 workers: {rate * 60:.0f} requests/min, 0 refused")
    assert 0.9 * 5 <= rate <= 5 * 1.1


async def test_a_429_with_retry_after_to_one_worker_slows_both(
    client: httpx.AsyncClient,
    api_key: str,
    whatsapp: FakeWhatsAppCloud,
    workers: list[WorkerProcess],
) -> None:
    await _workflow(whatsapp, messagesPerSecond=10)
    # The 30th message is refused with Retry-After: 2 (the number's throughput is reached).
    whatsapp.answer_when(lambda r: len(whatsapp.requests) == 30, Reply(429, retry_after="2"))
    a, b, one, two = await _sending_on_two_workers(client, api_key, workers, 40)
    await _completed(one, two, timeout=60)

    assert _ran_on(a, one) and _ran_on(b, two)
    refused_at = whatsapp.requests[29].at
    # Calls already on their way when the 429 came may arrive just after it; then nothing
    # from either worker until Retry-After has passed.
    quiet = [r for r in whatsapp.requests if refused_at + 0.3 < r.at < refused_at + 1.9]
    assert quiet == []
    later = [r.json["to"][5:7] for r in whatsapp.requests if r.at >= refused_at + 1.9]
    assert {"01", "02"} <= set(later), "both workers sent again after the wait"
    assert len(whatsapp.sent) == 80  # the refused message was sent again, once
    assert len({to for to, _, _ in whatsapp.sent}) == 80


async def test_the_bucket_keeps_no_secret_in_its_key_and_corrects_a_token_estimate(
    redis: ArqRedis,
) -> None:
    key = "sk-test-" + secrets.token_urlsafe(24)
    stem = provider_limits.account_key("llm", "https://api.example.com/v1", key)
    assert key not in stem and stem.startswith("flowgate:provider-limit:llm:")
    tokens = Bucket(f"{stem}:tokens", per_second=10, capacity=10)

    async def wait(cost: float, max_wait: float = 60) -> float | None:
        turn = await provider_limits.take(redis, [tokens], [cost], max_wait)
        return None if turn is None else turn.wait

    # 100 tokens estimated from a full bucket of 10: this caller waits 9 s, the next 9.1 s ...
    assert 8.9 < (await wait(100) or 0) <= 9.0
    assert 9.0 < (await wait(1) or 0) <= 9.1
    # ... until the answer says only 20 were used: 80 back, the next caller waits 1.2 s.
    await provider_limits.adjust(redis, tokens, 80)
    assert 1.1 < (await wait(1) or 0) <= 1.2
    # A take that would wait longer than the caller can takes nothing.
    assert await wait(1000, max_wait=5) is None
    assert 1.1 < (await wait(0) or 0) <= 1.2
    # A 429 blocks the bucket for its Retry-After and voids the turns given before it: the
    # debts are forgiven, a new turn comes right after the block.
    before = await provider_limits.blocked_for(redis, [tokens])
    await provider_limits.block(redis, [tokens], 3)
    after = await provider_limits.blocked_for(redis, [tokens])
    assert 2.9 < after.wait <= 3.0 and after.epoch == before.epoch + 1
    assert 3.0 < (await wait(1) or 0) <= 3.1
    assert (await redis.keys("flowgate:provider-limit:*")) == [tokens.key.encode()]


async def test_the_llm_servers_ratelimit_headers_keep_the_shared_bucket_under_them(
    redis: ArqRedis, llm: FakeChatCompletions
) -> None:
    from worker import outbound
    from worker.providers.openai_compatible import OpenAICompatibleProvider
    from worker.providers.types import ProviderLimits

    # The server allows one request a second and says so in x-ratelimit-*; the workflow's own
    # limit (6000/min) would allow far more.
    llm.enforce_limit(1, capacity=1)
    llm.ratelimit_headers = True
    settings = {
        "base_url": llm.url,
        "model": llm.model,
        "api_key_env": LLM_KEY_ENV,
        "prompt_template": "Offer for {{ name }}.",
        "max_tokens": 40,
        "requestsPerMinute": 6000,
    }
    async with outbound.client(allow_private=True) as http:
        provider = OpenAICompatibleProvider(settings, http, ProviderLimits(redis))
        for name in ("Asha", "Ravi", "Meera"):
            generated = await provider.generate({"name": name})
            assert generated.content.startswith(f"Offer for {name}.")

    assert llm.refused == []
    assert llm.problems == []
    gaps = [b.at - a.at for a, b in zip(llm.requests, llm.requests[1:], strict=False)]
    assert all(gap >= 0.9 for gap in gaps), gaps
