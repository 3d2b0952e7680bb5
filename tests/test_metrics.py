"""Prometheus metrics: /metrics on the web server and each worker's own endpoint.

The counting test runs what production runs: `flowgate serve` with two granian worker
processes (prometheus-client's multiprocess mode, which `flowgate serve` sets up) and a real
`flowgate worker` process with its endpoint on FLOWGATE_WORKER_METRICS_PORT, through one
real execution (approved, sent by the sandbox, webhooks to a real receiver)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests import factories
from tests.fake_providers import FakeChatCompletions, FakeWhatsAppCloud
from tests.live_server import LiveServer, free_port
from tests.receiver import Receiver
from tests.worker import test_providers as providers
from web.app import create_app
from web.settings import get_settings

TOKEN = "metrics-token-for-tests"
BFSI = "workflow_bfsi_marketing_template"
PUBLIC = "/api/v1/public"
EXECUTE_ROUTE = f"{PUBLIC}/agents/{{workflow_id}}/execute"
STATUS_ROUTE = f"{PUBLIC}/executions/{{execution_id}}/status"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def error(status: int, message: str, phrase: str) -> dict[str, object]:
    return {"message": message, "error": phrase, "statusCode": status}


# --- who may scrape -----------------------------------------------------------------------


@pytest.fixture
async def token_client(redis: object) -> AsyncIterator[httpx.AsyncClient]:
    app: Litestar = create_app(dataclasses.replace(get_settings(), metrics_token=TOKEN))
    async with (
        factories.serving(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
        ) as client,
    ):
        yield client


async def test_without_a_configured_token_metrics_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics", headers={"Authorization": "Bearer anything"})

    assert response.status_code == 404
    assert response.json() == error(404, "Not Found", "Not Found")


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN],
)
async def test_metrics_without_the_right_bearer_token_is_401(
    token_client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    response = await token_client.get("/metrics", headers=headers)

    assert response.status_code == 401
    assert response.json() == error(401, "Invalid metrics token", "Unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_the_right_token_gets_the_exposition_with_queue_depths(
    token_client: httpx.AsyncClient, api_key: str
) -> None:
    await factories.start(token_client, api_key)  # its job waits: no worker runs here
    response = await token_client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse(response.text)
    assert value(samples, "flowgate_queue_jobs", queue="arq:queue", state="ready") == 1
    assert value(samples, "flowgate_queue_jobs", queue="arq:queue:webhooks", state="ready") == 0
    for queue in ("arq:queue", "arq:queue:webhooks"):
        assert (
            "flowgate_queue_jobs",
            frozenset({"queue": queue, "state": "deferred"}.items()),
        ) in samples


def test_a_worker_refuses_the_web_servers_multiprocess_directory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "web.cli", "worker"],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "PROMETHEUS_MULTIPROC_DIR is set: unset it for flowgate worker" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_worker_whose_metrics_port_is_taken_stops_saying_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "web.cli", "worker"],
            env={**os.environ, "FLOWGATE_WORKER_METRICS_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert result.returncode == 1
    assert f"FLOWGATE_WORKER_METRICS_PORT: cannot listen on 127.0.0.1:{port}" in result.stderr


# --- a real run, scraped ------------------------------------------------------------------


class Worker:
    """`flowgate worker` in its own process, with its metrics endpoint."""

    def __init__(self, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "worker"],
            env={**os.environ, "FLOWGATE_WORKER_METRICS_PORT": str(self.port), **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the worker exited"
            try:
                async with httpx.AsyncClient() as client:
                    await client.get(f"{self.url}/metrics", timeout=1)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        raise AssertionError("the worker's metrics endpoint never answered")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


UUID_OR_HEX = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-|[0-9a-f]{16,}", re.IGNORECASE)
PHONE = re.compile(r"\+?\d{7,}")


def assert_no_unbounded_labels(text: str, secrets: list[str]) -> None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label, label_value in sample.labels.items():
                assert not UUID_OR_HEX.search(label_value), (sample.name, label, label_value)
                assert not PHONE.search(label_value), (sample.name, label, label_value)
    for secret in secrets:
        assert secret not in text


def _writers(metrics_dir: Path) -> set[str]:
    """The pids of the server processes that wrote counter values."""
    return {path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("counter_*.db")}


async def test_a_real_run_is_counted_by_two_web_processes_and_the_worker(
    db_pool: None, receiver: Receiver, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    server = LiveServer(
        workers=2, FLOWGATE_METRICS_TOKEN=TOKEN, FLOWGATE_METRICS_DIR=str(metrics_dir)
    ).start()
    worker = Worker(FLOWGATE_METRICS_TOKEN=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    try:
        await worker.ready()
        key = await factories.create_key(webhook_url=receiver.url)
        rows = factories.rows(3)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            started = await client.post(
                f"{PUBLIC}/agents/{BFSI}/execute",
                json={"input": {"csvData": rows}},
                headers=factories.auth(key.secret),
            )
            assert started.status_code == 202, started.text
            execution_id = started.json()["executionId"]
            polls = {"pending_approval": 0, "completed": 0}
            for wanted in polls:
                if wanted == "completed":
                    approved = await client.post(
                        f"{PUBLIC}/executions/{execution_id}/approve",
                        json={"comment": "ok"},
                        headers=factories.auth(key.secret),
                    )
                    assert approved.status_code == 200, approved.text
                deadline = time.monotonic() + 30
                while True:
                    # A new connection each time, so both server processes answer some.
                    async with httpx.AsyncClient(base_url=server.url, timeout=10) as fresh:
                        status = await fresh.get(
                            f"{PUBLIC}/executions/{execution_id}/status",
                            headers=factories.auth(key.secret),
                        )
                    polls[wanted] += 1
                    assert status.status_code == 200
                    if status.json()["status"] == wanted:
                        break
                    assert time.monotonic() < deadline, status.json()
                    await asyncio.sleep(0.1)
            # started, pending_approval, completed
            await receiver.wait_for(3, timeout=20)
            await asyncio.sleep(0.5)  # the worker counts an attempt after the receiver answers
            unknown = await client.get(f"{PUBLIC}/no/such/route/{execution_id}")
            assert unknown.status_code == 404

            # Each server process writes its files when it first counts something; which
            # process takes a new connection is the kernel's choice: knock on fresh connections
            # until both have answered (a busy machine may route many to the same one).
            deadline = time.monotonic() + 30
            while len(_writers(metrics_dir)) < 2 and time.monotonic() < deadline:
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as fresh:
                    assert (await fresh.get("/metrics", headers=bearer)).status_code == 200
            web_texts = [(await client.get("/metrics", headers=bearer)).text for _ in range(4)]
        async with httpx.AsyncClient(base_url=worker.url, timeout=10) as client:
            worker_text = (await client.get("/metrics", headers=bearer)).text
            refused = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
            elsewhere = await client.get("/", headers=bearer)
    finally:
        worker.stop()
        server.stop()

    # Both server processes wrote values, and any of them reports their sum.
    assert len(_writers(metrics_dir)) == 2, sorted(metrics_dir.iterdir())
    web = parse(web_texts[0])
    for text in web_texts:  # whichever process answers reports the totals of both
        assert value(parse(text), "flowgate_executions_started_total", workflow=BFSI) == 1
    requests = "flowgate_http_requests_total"
    assert value(web, requests, route=EXECUTE_ROUTE, method="POST", status="202") == 1
    assert value(web, requests, route=STATUS_ROUTE, method="GET", status="200") == sum(
        polls.values()
    )
    assert value(web, requests, route="unmatched", method="GET", status="404") == 1
    assert value(
        web, "flowgate_http_request_duration_seconds_count", route=STATUS_ROUTE, method="GET"
    ) == sum(polls.values())
    assert value(web, "flowgate_executions_started_total", workflow=BFSI) == 1
    assert (
        value(web, "flowgate_approval_wait_seconds_count", workflow=BFSI, decision="approved") == 1
    )
    assert value(web, "flowgate_approval_wait_seconds_sum", workflow=BFSI, decision="approved") > 0
    for queue in ("arq:queue", "arq:queue:webhooks"):
        assert value(web, "flowgate_queue_jobs", queue=queue, state="ready") == 0

    work = parse(worker_text)
    assert value(work, "flowgate_executions_finished_total", workflow=BFSI, status="completed") == 1
    assert value(work, "flowgate_rows_finished_total", workflow=BFSI, status="sent") == 3
    assert value(work, "flowgate_jobs_total", job="run_execution", outcome="ok") == 2
    assert value(work, "flowgate_job_duration_seconds_count", job="run_execution") == 2
    assert value(work, "flowgate_jobs_total", job="deliver_webhook", outcome="ok") == 3
    assert value(work, "flowgate_webhook_attempts_total", outcome="delivered") == 3
    assert value(work, "flowgate_webhook_attempt_duration_seconds_count", outcome="delivered") == 3
    assert (
        value(
            work,
            "flowgate_provider_calls_total",
            provider="template",
            operation="generate",
            outcome="ok",
        )
        == 3
    )
    assert (
        value(
            work,
            "flowgate_provider_calls_total",
            provider="sandbox",
            operation="send",
            outcome="sent",
        )
        == 3
    )
    assert (
        value(
            work,
            "flowgate_provider_call_duration_seconds_count",
            provider="sandbox",
            operation="send",
        )
        == 1  # one batch
    )
    # The web's counts are not the worker's, and the other way round.
    assert value(work, "flowgate_executions_started_total", workflow=BFSI) == 0
    assert value(web, "flowgate_executions_finished_total", workflow=BFSI, status="completed") == 0

    assert refused.status_code == 401
    assert refused.json() == error(401, "Invalid metrics token", "Unauthorized")
    assert elsewhere.status_code == 404
    assert elsewhere.json() == error(404, "Not Found", "Not Found")

    personal = [key.secret, execution_id, *(row["phone"] for row in rows)]
    personal += [row["name"] for row in rows]
    for text in [*web_texts, worker_text]:
        assert_no_unbounded_labels(text, personal)


# --- what the web process counts (in this process: values read before and after) -----------


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_rate_limit_and_quota_refusals_are_counted_by_reason(
    client: httpx.AsyncClient,
) -> None:
    limited = await factories.create_key(rate_limit_burst=1, rate_limit_refill_per_second=0.001)
    capped = await factories.create_key(monthly_limit=1)
    before = {r: sample("flowgate_refusals_total", reason=r) for r in ("rate_limit", "quota")}

    assert (await factories.execute(client, limited.secret)).status_code == 202
    assert (await factories.execute(client, limited.secret)).status_code == 429
    assert (await factories.execute(client, capped.secret)).status_code == 202
    assert (await factories.execute(client, capped.secret)).status_code == 403

    assert sample("flowgate_refusals_total", reason="rate_limit") == before["rate_limit"] + 1
    assert sample("flowgate_refusals_total", reason="quota") == before["quota"] + 1


async def test_a_rejection_counts_the_wait_the_cancelled_execution_and_its_rejected_rows(
    client: httpx.AsyncClient, api_key: str, run_worker: factories.WorkerRunner
) -> None:
    labels = {"workflow": BFSI}
    started = sample("flowgate_executions_started_total", **labels)
    cancelled = sample("flowgate_executions_finished_total", **labels, status="cancelled")
    rejected_rows = sample("flowgate_rows_finished_total", **labels, status="rejected")
    waits = sample("flowgate_approval_wait_seconds_count", **labels, decision="rejected")
    execution_id = await factories.start(client, api_key, csv_data=factories.rows(4))
    await run_worker()

    answer = await client.post(
        f"{PUBLIC}/executions/{execution_id}/reject",
        json={"comment": "not now"},
        headers=factories.auth(api_key),
    )

    assert answer.status_code == 200, answer.text
    assert sample("flowgate_executions_started_total", **labels) == started + 1
    finished = sample("flowgate_executions_finished_total", **labels, status="cancelled")
    assert finished == cancelled + 1
    assert sample("flowgate_rows_finished_total", **labels, status="rejected") == rejected_rows + 4
    waited = sample("flowgate_approval_wait_seconds_count", **labels, decision="rejected")
    assert waited == waits + 1


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeChatCompletions]:
    key = "sk-test-" + secrets.token_urlsafe(24)
    monkeypatch.setenv(providers.LLM_KEY_ENV, key)
    server = FakeChatCompletions(key)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def whatsapp(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWhatsAppCloud]:
    token = "EAAG" + secrets.token_urlsafe(32)
    monkeypatch.setenv(providers.WHATSAPP_TOKEN_ENV, token)
    server = FakeWhatsAppCloud(token)
    server.start()
    yield server
    server.stop()


async def test_llm_tokens_and_real_provider_calls_are_counted(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: factories.WorkerRunner,
    llm: FakeChatCompletions,
    whatsapp: FakeWhatsAppCloud,
) -> None:
    await providers.save(providers.llm_settings(llm), providers.whatsapp_settings(whatsapp))
    tokens = {t: sample("flowgate_llm_tokens_total", provider="openai_compatible", type=t)
              for t in ("prompt", "completion")}  # fmt: skip
    generated = sample(
        "flowgate_provider_calls_total",
        provider="openai_compatible", operation="generate", outcome="ok",
    )  # fmt: skip
    sent = sample(
        "flowgate_provider_calls_total", provider="whatsapp_cloud", operation="send", outcome="sent"
    )
    timed = sample(
        "flowgate_provider_call_duration_seconds_count", provider="whatsapp_cloud", operation="send"
    )

    execution_id, body = await providers.run_through_approval(
        client, api_key, run_worker, factories.rows(3)
    )

    assert [r["status"] for r in body["output"]["results"]] == ["sent"] * 3
    usages = [row["content_usage"] for row in await factories.row_states(execution_id)]
    for kind in ("prompt", "completion"):
        expected = tokens[kind] + sum(u[f"{kind}_tokens"] for u in usages)
        assert expected > tokens[kind]
        assert sample("flowgate_llm_tokens_total", provider="openai_compatible", type=kind) == (
            expected
        )
    assert sample(
        "flowgate_provider_calls_total",
        provider="openai_compatible", operation="generate", outcome="ok",
    ) == generated + 3  # fmt: skip
    assert (
        sample(
            "flowgate_provider_calls_total",
            provider="whatsapp_cloud",
            operation="send",
            outcome="sent",
        )
        == sent + 3
    )
    assert (
        sample(
            "flowgate_provider_call_duration_seconds_count",
            provider="whatsapp_cloud",
            operation="send",
        )
        == timed + 3
    )


async def test_failed_webhook_attempts_and_their_retried_jobs_are_counted_by_outcome(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: factories.WorkerRunner
) -> None:
    key = await factories.create_key(webhook_url=receiver.url)
    receiver.respond_with(500, 503)  # execution.started fails twice, then gets through
    before = {
        outcome: sample("flowgate_webhook_attempts_total", outcome=outcome)
        for outcome in ("http_error", "delivered")
    }
    retries = sample("flowgate_jobs_total", job="deliver_webhook", outcome="retry")

    await factories.start(client, key.secret)
    await run_worker()

    await receiver.wait_for(4)  # started x3, pending_approval
    assert sample("flowgate_webhook_attempts_total", outcome="http_error") == (
        before["http_error"] + 2
    )
    assert sample("flowgate_webhook_attempts_total", outcome="delivered") == (
        before["delivered"] + 2
    )
    assert sample("flowgate_jobs_total", job="deliver_webhook", outcome="retry") == retries + 2
