"""Personal data never appears in logs, at any level: a whole execution (API execute, worker
generate -> compliance -> approval through the API -> send, through a fake LLM and a fake
WhatsApp Cloud API; a row WhatsApp refuses; webhooks; results) and dashboard sign-ins, with every
logger at DEBUG, in-process (every record the root logger sees) and as real `flowgate serve` and
`flowgate worker` processes (every line they write on stderr). No known name, phone number (nor
its digits, nor its last ten), email or generated message text is in any of them.

tests/test_security.py does the same for API keys and webhook secrets."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.factories import PASSWORD, PUBLIC, auth, create_key, post_form, rows, sign_in
from tests.fake_providers import FakeChatCompletions, FakeWhatsAppCloud
from tests.live_server import LiveServer
from tests.receiver import Receiver
from web.domain import users
from web.domain.actors import Actor
from web.domain.workflows import BFSI_TEMPLATE, save_workflow
from web.logs import JsonFormatter

LLM_KEY_ENV = "FLOWGATE_TEST_LLM_API_KEY"
WHATSAPP_TOKEN_ENV = "FLOWGATE_TEST_WHATSAPP_TOKEN"
WORKFLOW_ID = "workflow_logs_pii"
PEOPLE = [
    ("Zephyrine Oduya-Blackwood", "+447700900123", "zephyrine.oduya@example.org"),
    ("Ignatius Vellacourt", "+919812345670", "ignatius.v@example.net"),
    ("Marisol Quintanilla", "+14155550199", "marisol.q@example.com"),
]
REFUSED = PEOPLE[2][1]  # WhatsApp refuses this number: the row fails with the API's message
REVIEWER_EMAIL = "reviewer.quillon-hartwell@example.net"
STRANGER_EMAIL = "nobody.mcnobodyface@example.org"
LOGGERS = (
    "",
    "flowgate",
    "arq",
    "arq.worker",
    "arq.jobs",
    "httpx",
    "httpcore",
    "litestar",
    "asyncpg",
    "piccolo",
    "granian",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
)


def _rows() -> list[dict[str, Any]]:
    data = rows(len(PEOPLE))
    for row, (name, phone, email) in zip(data, PEOPLE, strict=True):
        row.update(name=name, phone=phone, email=email)
    return data


def _forbidden() -> list[str]:
    """Every form of the personal data that must not be logged."""
    texts = [REVIEWER_EMAIL, STRANGER_EMAIL]
    for name, phone, email in PEOPLE:
        digits = phone.lstrip("+")
        texts += [name, *name.split(), phone, digits, digits[-10:], email, email.split("@")[0]]
        prompt = f"Offer for {name} in Mumbai."
        texts.append(FakeChatCompletions.reply_for(prompt))
    return texts


def _assert_clean(texts: list[str]) -> None:
    assert texts
    forbidden = _forbidden()
    for text in texts:
        for personal in forbidden:
            assert personal not in text, f"{personal!r} logged in: {text[:2000]}"


async def _save_workflow(llm: FakeChatCompletions, whatsapp: FakeWhatsAppCloud) -> None:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = WORKFLOW_ID
    definition["name"] = "BFSI through real providers"
    definition["steps"][0]["settings"] = {
        "provider": "openai_compatible",
        "base_url": llm.url,
        "model": llm.model,
        "api_key_env": LLM_KEY_ENV,
        "prompt_template": "Offer for {{ name }} in Mumbai.",
        "timeout_seconds": 5,
    }
    definition["steps"][3]["settings"] = {
        "channel": "whatsapp",
        "provider": "whatsapp_cloud",
        "base_url": whatsapp.url,
        "phone_number_id": whatsapp.phone_number_id,
        "access_token_env": WHATSAPP_TOKEN_ENV,
        "to_field": "phone",
        "timeout_seconds": 5,
    }
    await save_workflow(definition)


@pytest.fixture
def providers(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[FakeChatCompletions, FakeWhatsAppCloud]]:
    llm_key, token = "sk-test-" + secrets.token_urlsafe(16), "EAAG" + secrets.token_urlsafe(24)
    monkeypatch.setenv(LLM_KEY_ENV, llm_key)
    monkeypatch.setenv(WHATSAPP_TOKEN_ENV, token)
    llm, whatsapp = FakeChatCompletions(llm_key), FakeWhatsAppCloud(token)
    whatsapp.reject_number(REFUSED.lstrip("+"))
    llm.start()
    whatsapp.start()
    yield llm, whatsapp
    llm.stop()
    whatsapp.stop()


async def _dashboard_sign_ins(browser: httpx.AsyncClient) -> None:
    """A failed sign-in with an unknown email, a wrong password for a known one, then a sign-in."""
    for email in (STRANGER_EMAIL, REVIEWER_EMAIL):
        wrong = await post_form(
            browser,
            "/dashboard/login",
            {"email": email, "password": "wrong password", "next": "/dashboard"},
        )
        assert wrong.status_code in {200, 400, 401}, wrong.text
    await sign_in(browser, REVIEWER_EMAIL)


async def test_a_whole_run_in_process_logs_no_personal_data(
    client: httpx.AsyncClient,
    run_worker: Any,
    receiver: Receiver,
    providers: tuple[FakeChatCompletions, FakeWhatsAppCloud],
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    llm, whatsapp = providers
    await _save_workflow(llm, whatsapp)
    await users.create_user(REVIEWER_EMAIL, PASSWORD, "reviewer", actor=Actor.system())
    new = await create_key(webhook_url=receiver.url)

    response = await client.post(
        f"{PUBLIC}/agents/{WORKFLOW_ID}/execute",
        json={"input": {"csvData": _rows()}},
        headers=auth(new.secret),
    )
    assert response.status_code == 202, response.text
    execution_id = response.json()["executionId"]
    await run_worker()
    approval = await client.get(
        f"{PUBLIC}/executions/{execution_id}/pending-approval", headers=auth(new.secret)
    )
    assert approval.status_code == 200 and PEOPLE[0][0] in approval.text
    await client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(new.secret))
    await run_worker()
    results = await client.get(
        f"{PUBLIC}/executions/{execution_id}/results", headers=auth(new.secret)
    )
    assert [r["status"] for r in results.json()["output"]["results"]] == ["sent", "sent", "failed"]
    assert len(whatsapp.sent) == 2
    await receiver.wait_for(3)
    await _dashboard_sign_ins(client)
    detail = await client.get(f"/dashboard/executions/{execution_id}")
    assert detail.status_code == 200 and PEOPLE[0][0] in detail.text

    formatter = JsonFormatter()
    records = caplog.records
    assert any(r.levelno == logging.DEBUG for r in records)  # DEBUG was really on
    assert len(records) > 20
    _assert_clean(
        [caplog.text]
        + [formatter.format(r) for r in records]
        + [r.getMessage() for r in records]
        + [repr(r.__dict__) for r in records]
    )


def _wait_for(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


async def test_a_whole_run_through_real_processes_logs_no_personal_data(
    receiver: Receiver, providers: tuple[FakeChatCompletions, FakeWhatsAppCloud]
) -> None:
    llm, whatsapp = providers
    await _save_workflow(llm, whatsapp)
    await users.create_user(REVIEWER_EMAIL, PASSWORD, "reviewer", actor=Actor.system())
    new = await create_key(webhook_url=receiver.url)
    env = {**os.environ, "FLOWGATE_LOG_LEVEL": "DEBUG", "FLOWGATE_PROVIDER_ALLOW_PRIVATE": "true"}
    server = LiveServer(**{k: v for k, v in env.items() if k.startswith(("FLOWGATE_",))})
    server.start()
    with tempfile.TemporaryFile() as worker_log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "worker"],
            env=env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
                response = await api.post(
                    f"{PUBLIC}/agents/{WORKFLOW_ID}/execute",
                    json={"input": {"csvData": _rows()}},
                    headers=auth(new.secret),
                )
                assert response.status_code == 202, response.text
                execution_id = response.json()["executionId"]

                async def status() -> dict[str, Any]:
                    answer = await api.get(
                        f"{PUBLIC}/executions/{execution_id}/status", headers=auth(new.secret)
                    )
                    body: dict[str, Any] = answer.json()
                    return body

                deadline = time.monotonic() + 30
                while (await status())["status"] != "pending_approval":
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
                approved = await api.post(
                    f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(new.secret)
                )
                assert approved.status_code == 200, approved.text
                while (await status())["status"] != "completed":
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
                assert len(whatsapp.sent) == 2
                await receiver.wait_for(3)
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as browser:
                await _dashboard_sign_ins(browser)
                detail = await browser.get(f"/dashboard/executions/{execution_id}")
                assert detail.status_code == 200 and PEOPLE[0][0] in detail.text
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            finally:
                if worker.poll() is None:
                    worker.kill()
            server.stop()
        worker_log.seek(0)
        worker_lines = worker_log.read().decode().splitlines()
        server_lines = server.stderr.decode().splitlines()
        assert any('"level": "debug"' in line for line in worker_lines), worker_lines[:20]
        assert any('"level": "debug"' in line for line in server_lines), server_lines[:20]
        _assert_clean(worker_lines + server_lines)


def test_the_check_finds_personal_data_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    """The check above can fail: a phone's digits logged at DEBUG by any logger are found."""
    caplog.set_level(logging.DEBUG, logger="httpx")
    logging.getLogger("httpx").debug("POST /send?to=%s", PEOPLE[0][1].lstrip("+"))
    with pytest.raises(AssertionError, match="447700900123"):
        _assert_clean([r.getMessage() for r in caplog.records])


@pytest.mark.parametrize(
    ("message", "logged"),
    [
        ("to +447700900123 now", "to [phone] now"),
        ("to 447700900123", "to [phone]"),
        ("sign-in for zephyrine.oduya@example.org failed", "sign-in for [email] failed"),
        # Ids, durations and counts stay as they are.
        ("run 1eb3eed5-e2a5-42d6-a23f-108123456789 in 12.345678901 s", None),
        ("queued 12 job(s), 1733112345 ms", "queued 12 job(s), [phone] ms"),
        ("whatsapp_msg_1234567890abcdef", None),
    ],
)
def test_the_log_formatter_masks_phone_numbers_and_emails(message: str, logged: str | None) -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, message, (), None)
    assert json.loads(JsonFormatter().format(record))["message"] == (logged or message)
