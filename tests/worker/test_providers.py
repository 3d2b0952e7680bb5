"""Real providers against real HTTP servers on 127.0.0.1 (tests/fake_providers.py): generation
through an OpenAI-compatible chat-completions server, sending through the WhatsApp Cloud API and
a customer's own gateway; per-row failures, retries, concurrency, crashes and secrets."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from arq.connections import ArqRedis

from tests.factories import PUBLIC, auth, execution_row, row_states, rows, start
from tests.fake_providers import FakeChatCompletions, FakeGateway, FakeWhatsAppCloud, Reply
from web.domain import queue
from web.domain.tables import Execution, ExecutionRow, SandboxMessage
from web.domain.workflows import BFSI_TEMPLATE, save_workflow
from web.logs import JsonFormatter
from worker.steps.send_message import UNKNOWN_DELIVERY

LLM_KEY_ENV = "FLOWGATE_TEST_LLM_API_KEY"
WHATSAPP_TOKEN_ENV = "FLOWGATE_TEST_WHATSAPP_TOKEN"
GATEWAY_TOKEN_ENV = "FLOWGATE_TEST_GATEWAY_TOKEN"
SYSTEM_PROMPT = "You write short, compliant WhatsApp offers for a bank's customers."
PROMPT = "Offer for {{ name }} ({{ customerId }}) in {{ city }}."
WORKFLOW_ID = "workflow_real_providers"

# Graph API throttling as the Cloud API answers it: HTTP 400, code 130429.
WHATSAPP_THROTTLED = {
    "error": {
        "message": "(#130429) Rate limit hit",
        "type": "OAuthException",
        "code": 130429,
        "error_data": {"messaging_product": "whatsapp", "details": "Cloud API message "
                       "throughput has been reached."},
        "fbtrace_id": "AbCdEfGhIjKlMnOp",
    }
}  # fmt: skip


def _prompt(row: dict[str, Any]) -> str:
    return f"Offer for {row['name']} ({row['customerId']}) in {row['city']}."


def _message(row: dict[str, Any]) -> str:
    return FakeChatCompletions.reply_for(_prompt(row))


def _digits(row: dict[str, Any]) -> str:
    return str(row["phone"]).lstrip("+")


@pytest.fixture
def llm_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = "sk-test-" + secrets.token_urlsafe(24)
    monkeypatch.setenv(LLM_KEY_ENV, key)
    return key


@pytest.fixture
def whatsapp_token(monkeypatch: pytest.MonkeyPatch) -> str:
    token = "EAAG" + secrets.token_urlsafe(32)
    monkeypatch.setenv(WHATSAPP_TOKEN_ENV, token)
    return token


@pytest.fixture
def llm(llm_key: str) -> Iterator[FakeChatCompletions]:
    server = FakeChatCompletions(llm_key)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def whatsapp(whatsapp_token: str) -> Iterator[FakeWhatsAppCloud]:
    server = FakeWhatsAppCloud(whatsapp_token)
    server.start()
    yield server
    server.stop()


def llm_settings(llm: FakeChatCompletions, **overrides: Any) -> dict[str, Any]:
    return {
        "provider": "openai_compatible",
        "base_url": llm.url,
        "model": llm.model,
        "api_key_env": LLM_KEY_ENV,
        "system_prompt": SYSTEM_PROMPT,
        "prompt_template": PROMPT,
        "timeout_seconds": 5,
        "retry_backoff_seconds": 0.01,
        **overrides,
    }


def whatsapp_settings(whatsapp: FakeWhatsAppCloud, **overrides: Any) -> dict[str, Any]:
    return {
        "channel": "whatsapp",
        "provider": "whatsapp_cloud",
        "base_url": whatsapp.url,
        "phone_number_id": whatsapp.phone_number_id,
        "access_token_env": WHATSAPP_TOKEN_ENV,
        "to_field": "phone",
        "timeout_seconds": 5,
        "retry_backoff_seconds": 0.01,
        **overrides,
    }


async def save(content: dict[str, Any] | None = None, send: dict[str, Any] | None = None) -> str:
    """The BFSI workflow with these generate_content / send_message settings, as WORKFLOW_ID."""
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = WORKFLOW_ID
    definition["name"] = "BFSI through real providers"
    if content is not None:
        definition["steps"][0]["settings"] = content
    if send is not None:
        definition["steps"][3]["settings"] = send
    await save_workflow(definition)
    return WORKFLOW_ID


async def approve(client: httpx.AsyncClient, api_key: str, execution_id: str) -> None:
    response = await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key)
    )
    assert response.status_code == 200, response.text


async def results(client: httpx.AsyncClient, api_key: str, execution_id: str) -> dict[str, Any]:
    response = await client.get(
        f"{PUBLIC}/executions/{execution_id}/results", headers=auth(api_key)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def completed(execution_id: str, body: dict[str, Any], items: list[dict[str, Any]]) -> dict:
    """The whole results body of a completed run with these per-row results."""
    return {
        "id": execution_id,
        "status": "completed",
        "output": {
            "successCount": sum(1 for item in items if item["status"] == "sent"),
            "failedCount": sum(1 for item in items if item["status"] == "failed"),
            "results": items,
        },
        "error": None,
        "startedAt": body["startedAt"],
        "completedAt": body["completedAt"],
    }


def completed_via_whatsapp(
    execution_id: str, body: dict[str, Any], items: list[dict[str, Any]]
) -> dict:
    """As `completed`, for a run sent through whatsapp_cloud: its sent rows are `accepted`
    (no delivery status has come yet) and the output counts them (README "WhatsApp webhook")."""
    items = [{**item, "deliveryStatus": "accepted"} if item["status"] == "sent" else item
             for item in items]  # fmt: skip
    expected = completed(execution_id, body, items)
    accepted = sum(1 for item in items if item["status"] == "sent")
    expected["output"]["deliveryCounts"] = {
        "accepted": accepted, "sent": 0, "delivered": 0, "read": 0, "failed": 0,
    }  # fmt: skip
    return expected


async def run_through_approval(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, data: list[dict[str, Any]]
) -> tuple[str, dict[str, Any]]:
    execution_id = await start(client, api_key, csv_data=data, workflow_id=WORKFLOW_ID)
    await run_worker()
    await approve(client, api_key, execution_id)
    await run_worker()
    return execution_id, await results(client, api_key, execution_id)


# --- end to end ------------------------------------------------------------------------------


async def test_a_bfsi_run_through_openai_compatible_and_whatsapp_cloud_ends_with_whatsapp_ids(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    llm: FakeChatCompletions,
    whatsapp: FakeWhatsAppCloud,
    llm_key: str,
    whatsapp_token: str,
) -> None:
    await save(llm_settings(llm), whatsapp_settings(whatsapp))
    data = rows(3)
    execution_id = await start(client, api_key, csv_data=data, workflow_id=WORKFLOW_ID)

    await run_worker()

    pending = await client.get(
        f"{PUBLIC}/executions/{execution_id}/pending-approval", headers=auth(api_key)
    )
    assert pending.status_code == 200
    assert [(r["customerId"], r["generated_content"], r["compliance_status"])
            for r in pending.json()["approvalData"]["rows"]] == [
        (row["customerId"], _message(row), "passed") for row in data
    ]  # fmt: skip
    assert whatsapp.requests == []  # nothing goes out before the approval

    await approve(client, api_key, execution_id)
    await run_worker()

    body = await results(client, api_key, execution_id)
    message_ids = {to: message_id for to, _, message_id in whatsapp.sent}
    assert body == completed_via_whatsapp(
        execution_id,
        body,
        [
            {
                "customerId": row["customerId"],
                "status": "sent",
                "messageId": message_ids[_digits(row)],
            }
            for row in data
        ],
    )
    assert all(m.startswith("wamid.") for m in message_ids.values())
    # Every request as the vendors document it, with the bearer from the environment.
    assert llm.problems == [] and whatsapp.problems == []
    assert sorted((r.json for r in llm.requests), key=str) == sorted(
        (
            {
                "model": "flowgate-test-model",
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": _prompt(row)},
                ],
            }
            for row in data
        ),
        key=str,
    )
    assert {r.headers["authorization"] for r in llm.requests} == {f"Bearer {llm_key}"}
    assert sorted((r.json for r in whatsapp.requests), key=str) == sorted(
        (
            {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": _digits(row),
                "type": "text",
                "text": {"body": _message(row)},
            }
            for row in data
        ),
        key=str,
    )
    assert {r.headers["authorization"] for r in whatsapp.requests} == {f"Bearer {whatsapp_token}"}
    # Token usage per row, and its sum in the step's result.
    usages = [
        FakeChatCompletions.usage_for(
            [{"content": SYSTEM_PROMPT}, {"content": _prompt(row)}], _message(row)
        )
        for row in data
    ]
    stored_rows = await row_states(execution_id)
    assert [r["content_usage"] for r in stored_rows] == usages
    assert [r["send_status"] for r in stored_rows] == ["sent"] * 3
    steps = (await execution_row(execution_id))["step_results"]
    assert steps[0]["usage"] == {
        key: sum(u[key] for u in usages)
        for key in ("prompt_tokens", "completion_tokens", "total_tokens")
    }
    assert steps[3]["sent"] == 3 and steps[3]["failed"] == 0


async def test_the_http_provider_posts_the_row_and_takes_the_message_id_from_the_answer(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = secrets.token_urlsafe(24)
    monkeypatch.setenv(GATEWAY_TOKEN_ENV, token)
    gateway = FakeGateway(token)
    gateway.start()
    try:
        await save(
            send={
                "channel": "whatsapp",
                "provider": "http",
                "url": gateway.url,
                "token_env": GATEWAY_TOKEN_ENV,
                "headers": {"X-Tenant": "acme"},
                "retry_backoff_seconds": 0.01,
            }
        )
        data = rows(2)
        execution_id, body = await run_through_approval(client, api_key, run_worker, data)
    finally:
        gateway.stop()

    ids = dict(gateway.sent)
    assert body == completed(
        execution_id,
        body,
        [{"customerId": r["customerId"], "status": "sent", "messageId": ids[r["customerId"]]}
         for r in data],
    )  # fmt: skip
    assert gateway.problems == []
    stored = await row_states(execution_id)
    requests = sorted(gateway.requests, key=lambda r: r.json["customerId"])
    assert [r.json for r in requests] == [
        {
            "executionId": execution_id,
            "customerId": row["customerId"],
            "to": row["phone"],
            "message": state["generated_content"],
            "row": row,
        }
        for row, state in zip(data, stored, strict=True)
    ]
    assert [
        (r.headers["authorization"], r.headers["x-tenant"], r.headers["idempotency-key"])
        for r in requests
    ] == [(f"Bearer {token}", "acme", str(state["id"])) for state in stored]


async def test_whatsapp_template_messages_carry_the_template_and_its_body_parameters(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, whatsapp: FakeWhatsAppCloud
) -> None:
    template = {"name": "bfsi_offer", "language": "en_US", "body_parameters": ["name", "message"]}
    await save(send=whatsapp_settings(whatsapp, template=template))
    data = rows(1)

    execution_id, body = await run_through_approval(client, api_key, run_worker, data)

    assert body["output"]["successCount"] == 1
    content = (await row_states(execution_id))[0]["generated_content"]
    assert whatsapp.problems == []
    assert [r.json for r in whatsapp.requests] == [
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": _digits(data[0]),
            "type": "template",
            "template": {
                "name": "bfsi_offer",
                "language": {"code": "en_US"},
                "components": [
                    {
                        "type": "body",
                        "parameters": [
                            {"type": "text", "text": data[0]["name"]},
                            {"type": "text", "text": content},
                        ],
                    }
                ],
            },
        }
    ]


# --- one row fails, the others go on ---------------------------------------------------------


async def test_a_row_the_llm_refuses_ends_failed_with_the_providers_error_and_the_others_are_sent(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    llm: FakeChatCompletions,
    whatsapp: FakeWhatsAppCloud,
) -> None:
    error = {
        "error": {
            "message": "This model's maximum context length is 8192 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    llm.answer_when(lambda r: "CUST002" in FakeChatCompletions.prompt_of(r), Reply(400, error))
    await save(llm_settings(llm), whatsapp_settings(whatsapp))
    data = rows(3)

    execution_id, body = await run_through_approval(client, api_key, run_worker, data)

    ids = {to: message_id for to, _, message_id in whatsapp.sent}
    generation_error = (
        "Content generation failed: the provider answered 400: "
        "This model's maximum context length is 8192 tokens."
    )
    assert body == completed_via_whatsapp(
        execution_id,
        body,
        [
            {"customerId": "CUST001", "status": "sent", "messageId": ids[_digits(data[0])]},
            {
                "customerId": "CUST002",
                "status": "failed",
                "messageId": None,
                "error": generation_error,
            },
            {"customerId": "CUST003", "status": "sent", "messageId": ids[_digits(data[2])]},
        ],
    )
    assert (body["output"]["successCount"], body["output"]["failedCount"]) == (2, 1)
    # A 400 is not retried; the row kept no content and no usage.
    assert sum("CUST002" in FakeChatCompletions.prompt_of(r) for r in llm.requests) == 1
    second = (await row_states(execution_id))[1]
    assert (second["generated_content"], second["content_usage"]) == (None, None)
    # The reviewer saw why there is nothing to review on that row.
    assert second["compliance_status"] == "failed"
    assert second["compliance_reasons"][0] == generation_error
    assert {to for to, _, _ in whatsapp.sent} == {_digits(data[0]), _digits(data[2])}
    steps = (await execution_row(execution_id))["step_results"]
    assert {k: steps[3][k] for k in ("sent", "failed", "skipped", "rejected")} == {
        "sent": 2, "failed": 1, "skipped": 0, "rejected": 0
    }  # fmt: skip


async def test_a_number_whatsapp_refuses_fails_with_the_providers_message_and_the_others_are_sent(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, whatsapp: FakeWhatsAppCloud
) -> None:
    data = rows(3)
    whatsapp.reject_number(_digits(data[1]))
    await save(send=whatsapp_settings(whatsapp))

    execution_id, body = await run_through_approval(client, api_key, run_worker, data)

    ids = {to: message_id for to, _, message_id in whatsapp.sent}
    assert body == completed_via_whatsapp(
        execution_id,
        body,
        [
            {"customerId": "CUST001", "status": "sent", "messageId": ids[_digits(data[0])]},
            {
                "customerId": "CUST002",
                "status": "failed",
                "messageId": None,
                "error": "WhatsApp Cloud API error 131026: (#131026) Message undeliverable "
                "(Message failed to send because the recipient is not a WhatsApp user)",
            },
            {"customerId": "CUST003", "status": "sent", "messageId": ids[_digits(data[2])]},
        ],
    )
    assert len(whatsapp.requests) == 3  # a 400 is final: not retried
    assert whatsapp.problems == []


async def test_an_expired_whatsapp_token_stops_the_send_step_at_once_with_one_message(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, whatsapp: FakeWhatsAppCloud
) -> None:
    whatsapp.access_token = "a-newer-token"  # the one we hold is no longer valid
    await save(send=whatsapp_settings(whatsapp, concurrency=1))
    data = rows(5)
    execution_id = await start(client, api_key, csv_data=data, workflow_id=WORKFLOW_ID)
    await run_worker()
    await approve(client, api_key, execution_id)

    await run_worker()

    error = (
        "Step 4 (Send WhatsApp message) failed: WhatsApp Cloud API error 190: (#190) Error "
        "validating access token (The access token has expired)"
    )
    status = await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(api_key))
    assert status.json() == {
        "id": execution_id,
        "status": "failed",
        "startedAt": status.json()["startedAt"],
        "completedAt": status.json()["completedAt"],
        "error": error,
        "approvalStatus": "approved",
    }
    # One request, not one per row: the first answer says no row can get through.
    assert len(whatsapp.requests) == 1
    stored = await row_states(execution_id)
    assert [(r["send_status"], r["error"]) for r in stored] == [
        ("failed", error.removeprefix("Step 4 (Send WhatsApp message) failed: ")),
        *[(None, None)] * 4,
    ]


# --- retries, timeouts, concurrency ----------------------------------------------------------


async def test_generation_waits_for_retry_after_on_429_then_succeeds(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, llm: FakeChatCompletions
) -> None:
    llm.respond_with(Reply(429, retry_after="1"))
    await save(llm_settings(llm))
    data = rows(1)
    execution_id = await start(client, api_key, csv_data=data, workflow_id=WORKFLOW_ID)

    await run_worker()

    first, second = llm.requests
    assert second.at - first.at >= 1.0  # Retry-After, not the 0.01 s backoff
    assert first.json == second.json
    (row,) = await row_states(execution_id)
    assert (row["generated_content"], row["error"]) == (_message(data[0]), None)


async def test_generation_retries_5xx_with_backoff_then_succeeds(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, llm: FakeChatCompletions
) -> None:
    llm.respond_with(500, 503)
    await save(llm_settings(llm, retry_backoff_seconds=0.1))
    data = rows(1)
    execution_id = await start(client, api_key, csv_data=data, workflow_id=WORKFLOW_ID)

    await run_worker()

    times = [r.at for r in llm.requests]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.1 and times[2] - times[1] >= 0.2  # exponential backoff
    (row,) = await row_states(execution_id)
    assert row["generated_content"] == _message(data[0])


async def test_generation_gives_up_after_max_retries_and_fails_only_that_row(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, llm: FakeChatCompletions
) -> None:
    llm.respond_with(500, 500, 500)
    # One at a time, so the three 500s all go to the first row.
    await save(llm_settings(llm, max_retries=2, concurrency=1))
    data = rows(2)
    execution_id = await start(client, api_key, csv_data=data, workflow_id=WORKFLOW_ID)

    await run_worker()

    assert len(llm.requests) == 4
    first, second = await row_states(execution_id)
    assert (first["generated_content"], first["error"]) == (
        None,
        "Content generation failed: the provider answered 500: "
        "The server had an error while processing your request.",
    )
    assert (second["generated_content"], second["error"]) == (_message(data[1]), None)
    assert (await execution_row(execution_id))["status"] == "pending_approval"

    # Approved and sent: the row the provider failed on is a failure, not a skipped row.
    await approve(client, api_key, execution_id)
    await run_worker()
    body = await results(client, api_key, execution_id)
    sent_id = (await row_states(execution_id))[1]["message_id"]
    assert body == completed(
        execution_id,
        body,
        [
            {
                "customerId": "CUST001",
                "status": "failed",
                "messageId": None,
                "error": first["error"],
            },
            {"customerId": "CUST002", "status": "sent", "messageId": sent_id},
        ],
    )
    assert body["output"]["failedCount"] == 1


async def test_a_retry_after_longer_than_the_setting_allows_fails_the_row_at_once(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, llm: FakeChatCompletions
) -> None:
    llm.respond_with(Reply(429, retry_after="3600"))
    await save(llm_settings(llm, max_retry_wait_seconds=5))
    execution_id = await start(client, api_key, csv_data=rows(1), workflow_id=WORKFLOW_ID)

    await run_worker()

    assert len(llm.requests) == 1
    (row,) = await row_states(execution_id)
    assert row["error"] == (
        "Content generation failed: the provider answered 429: Rate limit reached for requests"
    )


async def test_a_slow_llm_answer_times_out_and_fails_the_row(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, llm: FakeChatCompletions
) -> None:
    llm.delay_seconds = 1.0
    await save(llm_settings(llm, timeout_seconds=0.2, max_retries=0))
    execution_id = await start(client, api_key, csv_data=rows(1), workflow_id=WORKFLOW_ID)

    started = time.monotonic()
    await run_worker()

    assert time.monotonic() - started < 1.0
    (row,) = await row_states(execution_id)
    assert (row["generated_content"], row["error"]) == (
        None,
        "Content generation failed: the chat-completions server did not answer within 0.2 s",
    )


async def test_generation_never_has_more_requests_in_flight_than_the_concurrency_setting(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, llm: FakeChatCompletions
) -> None:
    llm.delay_seconds = 0.15
    await save(llm_settings(llm, concurrency=3))
    execution_id = await start(client, api_key, csv_data=rows(10), workflow_id=WORKFLOW_ID)

    await run_worker()

    assert len(llm.requests) == 10
    assert llm.max_in_flight == 3
    assert all(r["generated_content"] for r in await row_states(execution_id))


async def test_sending_never_has_more_requests_in_flight_than_the_concurrency_setting(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, whatsapp: FakeWhatsAppCloud
) -> None:
    whatsapp.delay_seconds = 0.15
    await save(send=whatsapp_settings(whatsapp, concurrency=2))

    _, body = await run_through_approval(client, api_key, run_worker, rows(7))

    assert body["output"]["successCount"] == 7
    assert whatsapp.max_in_flight == 2


async def test_whatsapp_429_and_5xx_are_retried_honouring_retry_after_and_the_row_is_sent_once(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, whatsapp: FakeWhatsAppCloud
) -> None:
    whatsapp.respond_with(Reply(429, retry_after="1"), 503)
    await save(send=whatsapp_settings(whatsapp))
    data = rows(1)

    execution_id, body = await run_through_approval(client, api_key, run_worker, data)

    ((to, _, message_id),) = whatsapp.sent
    assert body == completed_via_whatsapp(
        execution_id, body, [{"customerId": "CUST001", "status": "sent", "messageId": message_id}]
    )
    first, second, third = whatsapp.requests
    assert second.at - first.at >= 1.0
    assert first.json == second.json == third.json and to == _digits(data[0])


# --- re-runs ---------------------------------------------------------------------------------


async def test_rows_that_already_have_content_are_not_generated_again(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, llm: FakeChatCompletions
) -> None:
    await save(llm_settings(llm))
    data = rows(3)
    execution_id = await start(client, api_key, csv_data=data, workflow_id=WORKFLOW_ID)
    # A worker that died mid-step had saved the first row's message already.
    await ExecutionRow.update({ExecutionRow.generated_content: "Kept from the first run."}).where(
        ExecutionRow.execution == UUID(execution_id), ExecutionRow.position == 0
    )

    await run_worker()

    assert sorted(FakeChatCompletions.prompt_of(r) for r in llm.requests) == sorted(
        [_prompt(data[1]), _prompt(data[2])]
    )
    assert [r["generated_content"] for r in await row_states(execution_id)] == [
        "Kept from the first run.",
        _message(data[1]),
        _message(data[2]),
    ]


async def _send_status(execution_id: str, position: int) -> str | None:
    row = (
        await ExecutionRow.select(ExecutionRow.send_status)
        .where(ExecutionRow.execution == UUID(execution_id), ExecutionRow.position == position)
        .first()
    )
    assert row is not None
    status: str | None = row["send_status"]
    return status


async def test_a_rerun_after_a_worker_is_killed_mid_send_sends_no_row_twice(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    redis: ArqRedis,
    whatsapp: FakeWhatsAppCloud,
) -> None:
    await save(send=whatsapp_settings(whatsapp, concurrency=1))
    data = rows(5)
    execution_id = await start(client, api_key, csv_data=data, workflow_id=WORKFLOW_ID)
    await run_worker()
    await approve(client, api_key, execution_id)
    # Two rows go through; WhatsApp never answers the third: the worker is killed waiting.
    whatsapp.respond_with(200, 200, "hang")
    env = {**os.environ, "FLOWGATE_EXECUTION_LEASE_SECONDS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await whatsapp.wait_for(3, timeout=30)
        deadline = time.monotonic() + 10
        while await _send_status(execution_id, 2) != "sending":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert [await _send_status(execution_id, i) for i in range(5)] == [
        "sent", "sent", "sending", None, None
    ]  # fmt: skip
    # arq would hand the cut-off job to another worker after its timeout; do it now.
    assert await redis.delete(f"arq:in-progress:{queue.run_job_id(UUID(execution_id), 2)}") == 1

    await run_worker()

    # Every row reached WhatsApp exactly once: the third (maybe delivered) is not sent again.
    assert [r.json["to"] for r in whatsapp.requests] == [_digits(row) for row in data]
    ids = {to: message_id for to, _, message_id in whatsapp.sent}
    body = await results(client, api_key, execution_id)
    assert body == completed_via_whatsapp(
        execution_id,
        body,
        [
            {"customerId": "CUST001", "status": "sent", "messageId": ids[_digits(data[0])]},
            {"customerId": "CUST002", "status": "sent", "messageId": ids[_digits(data[1])]},
            {
                "customerId": "CUST003",
                "status": "failed",
                "messageId": None,
                "error": "Delivery state unknown after a worker crash; "
                "not resent to avoid a duplicate",
            },
            {"customerId": "CUST004", "status": "sent", "messageId": ids[_digits(data[3])]},
            {"customerId": "CUST005", "status": "sent", "messageId": ids[_digits(data[4])]},
        ],
    )
    assert body["output"]["results"][2]["error"] == UNKNOWN_DELIVERY


# --- secrets ---------------------------------------------------------------------------------


async def test_a_missing_api_key_variable_fails_the_step_naming_the_variable(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    llm: FakeChatCompletions,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(LLM_KEY_ENV)
    await save(llm_settings(llm))
    execution_id = await start(client, api_key, csv_data=rows(2), workflow_id=WORKFLOW_ID)

    await run_worker()

    stored = await execution_row(execution_id)
    assert (stored["status"], stored["error"]) == (
        "failed",
        "Step 1 (Generate personalised message) failed: Environment variable "
        "FLOWGATE_TEST_LLM_API_KEY (settings.api_key_env) is not set on the worker",
    )
    assert llm.requests == []


async def test_a_missing_whatsapp_token_variable_fails_the_send_step_and_touches_no_row(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    whatsapp: FakeWhatsAppCloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await save(send=whatsapp_settings(whatsapp))
    execution_id = await start(client, api_key, csv_data=rows(2), workflow_id=WORKFLOW_ID)
    await run_worker()
    await approve(client, api_key, execution_id)
    monkeypatch.delenv(WHATSAPP_TOKEN_ENV)

    await run_worker()

    stored = await execution_row(execution_id)
    assert (stored["status"], stored["error"]) == (
        "failed",
        "Step 4 (Send WhatsApp message) failed: Environment variable "
        "FLOWGATE_TEST_WHATSAPP_TOKEN (settings.access_token_env) is not set on the worker",
    )
    assert [r["send_status"] for r in await row_states(execution_id)] == [None, None]
    assert whatsapp.requests == []


async def _database_text() -> str:
    """Every row of every table, as JSON text."""
    tables = await Execution.raw(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    parts = []
    for table in tables:
        name = table["table_name"]
        rows_ = await Execution.raw(f'SELECT row_to_json(t)::text AS j FROM "{name}" AS t')
        parts.extend(row["j"] for row in rows_)
    return "\n".join(parts)


async def test_provider_secrets_are_stored_nowhere_and_never_logged(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    llm: FakeChatCompletions,
    whatsapp: FakeWhatsAppCloud,
    llm_key: str,
    whatsapp_token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # One row fails at each provider too, so error paths are covered: this server even echoes
    # the key it was sent in its error message.
    echo = {"error": {"message": f"Invalid prompt for key {llm_key}.", "type": "invalid"}}
    llm.answer_when(lambda r: "CUST002" in FakeChatCompletions.prompt_of(r), Reply(400, echo))
    data = rows(3)
    whatsapp.reject_number(_digits(data[2]))
    await save(llm_settings(llm), whatsapp_settings(whatsapp))

    execution_id, body = await run_through_approval(client, api_key, run_worker, data)

    assert [r["status"] for r in body["output"]["results"]] == ["sent", "failed", "failed"]
    assert body["output"]["results"][1]["error"] == (
        "Content generation failed: the provider answered 400: Invalid prompt for key [redacted]."
    )
    stored = await _database_text()
    assert execution_id in stored and LLM_KEY_ENV in stored and WHATSAPP_TOKEN_ENV in stored
    assert llm_key not in stored
    assert whatsapp_token not in stored
    # The logs did see the provider calls, never their credentials.
    assert any("chat/completions" in record.getMessage() for record in caplog.records)
    formatter = JsonFormatter()
    logged = "\n".join(
        [caplog.text, *(formatter.format(r) for r in caplog.records), *map(str, caplog.records)]
    )
    logged += "\n".join(str(vars(record)) for record in caplog.records)
    assert llm_key not in logged
    assert whatsapp_token not in logged


async def test_a_worker_killed_mid_generation_is_finished_by_another_without_regenerating(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    redis: ArqRedis,
    llm: FakeChatCompletions,
) -> None:
    await save(content=llm_settings(llm, concurrency=1))
    data = rows(5)
    execution_id = await start(client, api_key, csv_data=data, workflow_id=WORKFLOW_ID)
    # Two rows are generated; the LLM never answers the third: the worker is killed waiting.
    llm.respond_with(200, 200, "hang")
    env = {**os.environ, "FLOWGATE_EXECUTION_LEASE_SECONDS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await llm.wait_for(3, timeout=30)
        deadline = time.monotonic() + 10
        while sum(1 for r in await row_states(execution_id) if r["generated_content"]) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert [bool(r["generated_content"]) for r in await row_states(execution_id)] == [
        True, True, False, False, False
    ]  # fmt: skip
    assert await redis.delete(f"arq:in-progress:{queue.run_job_id(UUID(execution_id), 0)}") == 1

    await run_worker()
    await approve(client, api_key, execution_id)
    await run_worker()

    prompts = [FakeChatCompletions.prompt_of(r) for r in llm.requests]
    # Rows 1 and 2 were asked once; row 3 twice (the killed worker's request went unanswered).
    assert prompts == [_prompt(data[i]) for i in (0, 1, 2, 2, 3, 4)]
    body = await results(client, api_key, execution_id)
    assert body["status"] == "completed"
    assert [r["status"] for r in body["output"]["results"]] == ["sent"] * 5
    assert await SandboxMessage.count() == 5


# --- errors no retry will fix stop the step at once ------------------------------------------


def _closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def _status(client: httpx.AsyncClient, api_key: str, execution_id: str) -> dict[str, Any]:
    response = await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(api_key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def assert_failed_before_review(
    client: httpx.AsyncClient, api_key: str, execution_id: str, error: str
) -> None:
    """The execution failed with `error` and never asked a reviewer for anything."""
    status = await _status(client, api_key, execution_id)
    assert status == {
        "id": execution_id,
        "status": "failed",
        "startedAt": status["startedAt"],
        "completedAt": status["completedAt"],
        "error": error,
        "approvalStatus": None,
    }
    pending = await client.get(
        f"{PUBLIC}/executions/{execution_id}/pending-approval", headers=auth(api_key)
    )
    assert pending.status_code == 409
    stored = await row_states(execution_id)
    assert [(r["generated_content"], r["compliance_status"]) for r in stored] == [
        (None, None)
    ] * len(stored)


@pytest.mark.parametrize(
    ("status", "body", "text"),
    [
        (401, None, "401 Incorrect API key provided."),
        (
            403,
            {"error": {"message": "Project does not have access to model flowgate-test-model",
                       "type": "invalid_request_error", "param": None,
                       "code": "model_not_found"}},
            "403 Project does not have access to model flowgate-test-model",
        ),
    ],
)  # fmt: skip
async def test_a_refused_llm_key_stops_generation_at_once_and_fails_the_run_with_one_message(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    llm: FakeChatCompletions,
    status: int,
    body: dict[str, Any] | None,
    text: str,
) -> None:
    if status == 401:
        llm.api_key = "sk-another-key"  # ours is refused
    else:
        llm.answer_when(lambda r: True, Reply(status, body))
    await save(llm_settings(llm, concurrency=2))
    execution_id = await start(client, api_key, csv_data=rows(10), workflow_id=WORKFLOW_ID)

    await run_worker()

    await assert_failed_before_review(
        client,
        api_key,
        execution_id,
        "Step 1 (Generate personalised message) failed: the chat-completions server refused "
        f"the key in {LLM_KEY_ENV} (settings.api_key_env): {text}",
    )
    # At most the rows already in flight were asked, once each: not 10 rows, not retried.
    assert 1 <= len(llm.requests) <= 2
    assert len({FakeChatCompletions.prompt_of(r) for r in llm.requests}) == len(llm.requests)


async def test_a_refused_llm_key_echoed_by_the_server_is_redacted_in_the_executions_error(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    llm: FakeChatCompletions,
    llm_key: str,
) -> None:
    echo = {"error": {"message": f"Incorrect API key provided: {llm_key}.", "type": "auth"}}
    llm.respond_with(Reply(401, echo))
    await save(llm_settings(llm, concurrency=1))
    execution_id = await start(client, api_key, csv_data=rows(3), workflow_id=WORKFLOW_ID)

    await run_worker()

    await assert_failed_before_review(
        client,
        api_key,
        execution_id,
        "Step 1 (Generate personalised message) failed: the chat-completions server refused "
        f"the key in {LLM_KEY_ENV} (settings.api_key_env): 401 Incorrect API key provided: "
        "[redacted].",
    )
    assert llm_key not in await _database_text()


async def test_a_spent_llm_quota_stops_generation_at_once_without_retrying(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, llm: FakeChatCompletions
) -> None:
    quota = {
        "error": {
            "message": "You exceeded your current quota, please check your plan and billing "
            "details.",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    }
    llm.answer_when(lambda r: True, Reply(429, quota))
    await save(llm_settings(llm, concurrency=1))
    execution_id = await start(client, api_key, csv_data=rows(5), workflow_id=WORKFLOW_ID)

    await run_worker()

    await assert_failed_before_review(
        client,
        api_key,
        execution_id,
        "Step 1 (Generate personalised message) failed: the chat-completions server answered "
        "429: You exceeded your current quota, please check your plan and billing details.",
    )
    assert len(llm.requests) == 1


@pytest.mark.parametrize(
    ("path", "hint"),
    [("", True), ("/api", True), ("/v1/models", False), ("/v1beta/openai", False)],
)
async def test_an_llm_404_stops_generation_and_suggests_v1_when_the_base_url_lacks_it(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    llm: FakeChatCompletions,
    path: str,
    hint: bool,
) -> None:
    base_url = llm.origin + path
    await save(llm_settings(llm, base_url=base_url, concurrency=1))
    execution_id = await start(client, api_key, csv_data=rows(5), workflow_id=WORKFLOW_ID)

    await run_worker()

    error = (
        "Step 1 (Generate personalised message) failed: the chat-completions server answered "
        f"404 to POST {base_url}/chat/completions: Invalid URL (POST {path}/chat/completions)"
    )
    if hint:
        error += f"; did you mean base_url {base_url}/v1?"
    await assert_failed_before_review(client, api_key, execution_id, error)
    assert len(llm.requests) == 1


async def test_an_llm_nothing_listens_for_stops_generation_after_the_first_rows_attempts(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    base_url = f"http://127.0.0.1:{_closed_port()}/v1"
    await save(
        {
            "provider": "openai_compatible",
            "base_url": base_url,
            "model": "any",
            "api_key_env": LLM_KEY_ENV,
            "prompt_template": PROMPT,
            "max_retries": 2,
            "retry_backoff_seconds": 0.01,
            "concurrency": 1,
        }
    )
    os.environ[LLM_KEY_ENV] = "sk-unused"
    try:
        execution_id = await start(client, api_key, csv_data=rows(20), workflow_id=WORKFLOW_ID)
        await run_worker()
    finally:
        del os.environ[LLM_KEY_ENV]

    stored = await execution_row(execution_id)
    assert stored["status"] == "failed"
    assert re.fullmatch(
        re.escape(
            "Step 1 (Generate personalised message) failed: could not reach the "
            f"chat-completions server at {base_url}/chat/completions (ConnectError: "
        )
        + r".+; 3 attempts\)",
        stored["error"],
    ), stored["error"]
    await assert_failed_before_review(client, api_key, execution_id, stored["error"])


async def test_a_wrong_whatsapp_api_version_stops_the_send_step_with_error_2500(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, whatsapp: FakeWhatsAppCloud
) -> None:
    await save(send=whatsapp_settings(whatsapp, base_url=whatsapp.origin + "/v99.0", concurrency=1))
    execution_id = await start(client, api_key, csv_data=rows(4), workflow_id=WORKFLOW_ID)
    await run_worker()
    await approve(client, api_key, execution_id)

    await run_worker()

    reason = (
        "WhatsApp Cloud API error 2500: Unknown path components: "
        f"/v99.0/{whatsapp.phone_number_id}/messages"
    )
    stored = await execution_row(execution_id)
    assert (stored["status"], stored["error"]) == (
        "failed",
        f"Step 4 (Send WhatsApp message) failed: {reason}",
    )
    assert len(whatsapp.requests) == 1 and whatsapp.sent == []
    assert [(r["send_status"], r["error"]) for r in await row_states(execution_id)] == [
        ("failed", reason), (None, None), (None, None), (None, None)
    ]  # fmt: skip


async def test_a_whatsapp_api_nothing_listens_on_stops_the_send_step(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, whatsapp_token: str
) -> None:
    base_url = f"http://127.0.0.1:{_closed_port()}/v21.0"
    settings = {
        "channel": "whatsapp",
        "provider": "whatsapp_cloud",
        "base_url": base_url,
        "phone_number_id": "106540352242922",
        "access_token_env": WHATSAPP_TOKEN_ENV,
        "max_retries": 1,
        "retry_backoff_seconds": 0.01,
        "concurrency": 1,
    }
    await save(send=settings)
    execution_id = await start(client, api_key, csv_data=rows(5), workflow_id=WORKFLOW_ID)
    await run_worker()
    await approve(client, api_key, execution_id)

    await run_worker()

    stored = await execution_row(execution_id)
    assert stored["status"] == "failed"
    prefix = (
        "Step 4 (Send WhatsApp message) failed: could not reach the WhatsApp Cloud API at "
        f"{base_url}/106540352242922/messages (ConnectError: "
    )
    assert stored["error"].startswith(prefix) and stored["error"].endswith("; 2 attempts)")
    # Certainly not sent: the first row failed, the others were never tried.
    assert [r["send_status"] for r in await row_states(execution_id)] == [
        "failed", None, None, None, None
    ]  # fmt: skip


# --- preflight: a run checks every step when it starts ---------------------------------------


async def test_a_missing_whatsapp_token_fails_the_run_when_it_starts_before_any_generation(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    llm: FakeChatCompletions,
    whatsapp: FakeWhatsAppCloud,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(WHATSAPP_TOKEN_ENV)
    await save(llm_settings(llm), whatsapp_settings(whatsapp))
    execution_id = await start(client, api_key, csv_data=rows(3), workflow_id=WORKFLOW_ID)

    await run_worker()

    await assert_failed_before_review(
        client,
        api_key,
        execution_id,
        "Step 4 (Send WhatsApp message) failed: Environment variable "
        f"{WHATSAPP_TOKEN_ENV} (settings.access_token_env) is not set on the worker",
    )
    assert llm.requests == [] and whatsapp.requests == []
    assert (await execution_row(execution_id))["step_results"] == []


@pytest.mark.parametrize(
    ("step", "setting", "value", "error"),
    [
        (
            "content",
            "base_url",
            "localhost:11434/v1",
            "Step 1 (Generate personalised message) failed: settings.base_url is not an "
            "http(s) URL with a host: 'localhost:11434/v1'",
        ),
        (
            "send",
            "base_url",
            "https://graph facebook.com/v21.0",
            "Step 4 (Send WhatsApp message) failed: settings.base_url is not an http(s) URL "
            "with a host: 'https://graph facebook.com/v21.0'",
        ),
    ],
)
async def test_a_malformed_provider_url_fails_the_run_when_it_starts(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    llm: FakeChatCompletions,
    whatsapp: FakeWhatsAppCloud,
    step: str,
    setting: str,
    value: str,
    error: str,
) -> None:
    await save(llm_settings(llm), whatsapp_settings(whatsapp))
    execution_id = await start(client, api_key, csv_data=rows(2), workflow_id=WORKFLOW_ID)
    # Workflow files refuse such a URL; a definition stored before that check (or edited in the
    # database) still reaches the worker. Each execution keeps its own copy: change that one.
    definition = (await execution_row(execution_id))["definition"]
    definition["steps"][0 if step == "content" else 3]["settings"][setting] = value
    await Execution.update({Execution.definition: json.dumps(definition)}).where(
        Execution.id == UUID(execution_id)
    )

    await run_worker()

    await assert_failed_before_review(client, api_key, execution_id, error)
    assert llm.requests == [] and whatsapp.requests == []


# --- a send is never repeated when it may have been accepted ---------------------------------


async def test_a_whatsapp_500_after_accepting_is_not_resent_and_the_rows_delivery_is_unknown(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, whatsapp: FakeWhatsAppCloud
) -> None:
    data = rows(3)
    second = _digits(data[1])
    whatsapp.answer_when(lambda r: (r.json or {}).get("to") == second, Reply(500, accept=True))
    await save(send=whatsapp_settings(whatsapp))

    execution_id, body = await run_through_approval(client, api_key, run_worker, data)

    # WhatsApp took the message (it may well be delivered) and we asked exactly once.
    assert [r.json["to"] for r in whatsapp.requests].count(second) == 1
    assert second in [to for to, _, _ in whatsapp.sent]
    ids = {to: message_id for to, _, message_id in whatsapp.sent}
    assert body == completed_via_whatsapp(
        execution_id,
        body,
        [
            {"customerId": "CUST001", "status": "sent", "messageId": ids[_digits(data[0])]},
            {
                "customerId": "CUST002",
                "status": "failed",
                "messageId": None,
                "error": "Delivery state unknown: the WhatsApp Cloud API answered 500 (WhatsApp "
                "Cloud API error 131000: (#131000) Something went wrong (Something went wrong)); "
                "not resent to avoid a duplicate",
            },
            {"customerId": "CUST003", "status": "sent", "messageId": ids[_digits(data[2])]},
        ],
    )
    steps = (await execution_row(execution_id))["step_results"]
    assert (steps[3]["failed"], steps[3]["delivery_unknown"]) == (1, 1)
    assert len(whatsapp.requests) == 3


async def test_a_whatsapp_send_without_an_answer_in_time_is_not_resent(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, whatsapp: FakeWhatsAppCloud
) -> None:
    whatsapp.respond_with(Reply(delay=1.0))
    await save(send=whatsapp_settings(whatsapp, timeout_seconds=0.3, concurrency=1))
    data = rows(2)

    _, body = await run_through_approval(client, api_key, run_worker, data)

    assert [r.json["to"] for r in whatsapp.requests] == [_digits(row) for row in data]
    assert [(r["status"], r.get("error")) for r in body["output"]["results"]] == [
        (
            "failed",
            "Delivery state unknown: the WhatsApp Cloud API did not answer within 0.3 s; "
            "not resent to avoid a duplicate",
        ),
        ("sent", None),
    ]


async def test_whatsapp_rate_limits_and_its_not_processed_503_are_retried_and_sent_once(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, whatsapp: FakeWhatsAppCloud
) -> None:
    # 429 without Retry-After, Graph API throttling (code 130429 in a 400), 503 code 2.
    whatsapp.respond_with(429, Reply(400, WHATSAPP_THROTTLED), 503)
    await save(send=whatsapp_settings(whatsapp, max_retries=3))
    data = rows(1)

    execution_id, body = await run_through_approval(client, api_key, run_worker, data)

    ((_, _, message_id),) = whatsapp.sent
    assert body == completed_via_whatsapp(
        execution_id, body, [{"customerId": "CUST001", "status": "sent", "messageId": message_id}]
    )
    assert len(whatsapp.requests) == 4


async def test_the_http_gateway_is_retried_on_503_and_never_on_another_5xx(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    gateway = FakeGateway()
    gateway.start()
    data = rows(2)
    try:
        gateway.respond_with(503)  # the first row: not processed, tried again
        gateway.answer_when(lambda r: r.json["customerId"] == "CUST002", Reply(502, accept=True))
        await save(
            send={
                "channel": "whatsapp",
                "provider": "http",
                "url": gateway.url,
                "retry_backoff_seconds": 0.01,
                "concurrency": 1,
            }
        )
        execution_id, body = await run_through_approval(client, api_key, run_worker, data)
    finally:
        gateway.stop()

    assert [r.json["customerId"] for r in gateway.requests] == ["CUST001", "CUST001", "CUST002"]
    ids = dict(gateway.sent)
    assert body == completed(
        execution_id,
        body,
        [
            {"customerId": "CUST001", "status": "sent", "messageId": ids["CUST001"]},
            {
                "customerId": "CUST002",
                "status": "failed",
                "messageId": None,
                "error": 'Delivery state unknown: the gateway answered 502: {"error": '
                '"gateway error 502"}; not resent to avoid a duplicate',
            },
        ],
    )
