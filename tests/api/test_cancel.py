"""POST /executions/:id/cancel: from `pending`, `running` or `pending_approval` the run ends
`cancelled` and stops at its next step or send; a message the provider took stays sent, every
other row ends `cancelled`; from a final status, 409 and nothing changes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.factories import PUBLIC, auth, execution_row, row_states, rows, start
from tests.fake_providers import FakeWhatsAppCloud
from tests.worker.test_providers import (  # noqa: F401 (fixtures)
    WORKFLOW_ID,
    save,
    whatsapp,
    whatsapp_settings,
    whatsapp_token,
)
from web.domain.tables import SandboxMessage, WebhookEvent

CANCELLED_ROW = {"status": "cancelled", "messageId": None, "reason": "Execution cancelled"}


async def cancel(
    client: httpx.AsyncClient, api_key: str, execution_id: str, body: Any = None
) -> httpx.Response:
    return await client.post(
        f"{PUBLIC}/executions/{execution_id}/cancel", json=body, headers=auth(api_key)
    )


async def results(client: httpx.AsyncClient, api_key: str, execution_id: str) -> dict[str, Any]:
    answer = await client.get(f"{PUBLIC}/executions/{execution_id}/results", headers=auth(api_key))
    body: dict[str, Any] = answer.json()
    return body


async def test_a_pending_execution_is_cancelled_before_any_work(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(2))

    answer = await cancel(client, api_key, execution_id)
    await run_worker()  # the queued job finds nothing to do

    assert answer.status_code == 200
    assert answer.json() == {
        "executionId": execution_id,
        "status": "cancelled",
        "message": "Execution cancelled",
    }
    status = (
        await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(api_key))
    ).json()
    assert status["status"] == "cancelled"
    assert status["completedAt"] is not None
    assert status["error"] is None
    assert status["approvalStatus"] is None
    body = await results(client, api_key, execution_id)
    assert body["output"] == {
        "successCount": 0,
        "failedCount": 0,
        "results": [{"customerId": f"CUST00{n}", **CANCELLED_ROW} for n in (1, 2)],
    }
    assert all(row["generated_content"] is None for row in await row_states(execution_id))
    assert await SandboxMessage.count() == 0


async def test_a_waiting_execution_is_cancelled_with_approval_rejected_and_the_comment(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(2))
    await run_worker()

    answer = await cancel(client, api_key, execution_id, {"comment": "campaign withdrawn"})
    await run_worker()

    assert answer.status_code == 200
    stored = await execution_row(execution_id)
    assert stored["status"] == "cancelled"
    assert stored["approval_status"] == "rejected"
    assert stored["approval_comment"] == "campaign withdrawn"
    assert stored["approval_decided_by"] == "api_key:test customer"
    output = (await results(client, api_key, execution_id))["output"]
    assert [r["status"] for r in output["results"]] == ["cancelled", "cancelled"]
    assert await SandboxMessage.count() == 0


async def test_a_final_execution_cannot_be_cancelled_and_nothing_changes(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(1))
    await run_worker()
    await client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key))
    await run_worker()
    before = await execution_row(execution_id)

    answer = await cancel(client, api_key, execution_id)

    assert answer.status_code == 409
    assert answer.json() == {
        "message": "Execution is already completed: it cannot be cancelled",
        "error": "Conflict",
        "statusCode": 409,
    }
    assert await execution_row(execution_id) == before
    again = await cancel(client, api_key, (await start(client, api_key)))
    assert again.status_code == 200
    twice = await cancel(client, api_key, again.json()["executionId"])
    assert twice.status_code == 409


async def test_another_keys_execution_is_not_found(
    client: httpx.AsyncClient, api_key: str, other_api_key: str
) -> None:
    execution_id = await start(client, api_key)
    answer = await cancel(client, other_api_key, execution_id)
    assert answer.status_code == 404
    assert answer.json()["message"] == "Execution not found"
    assert (await execution_row(execution_id))["status"] == "pending"


async def test_a_run_cancelled_while_it_sends_keeps_what_was_sent_and_sends_nothing_more(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    whatsapp: FakeWhatsAppCloud,  # noqa: F811 (the fixture imported above)
) -> None:
    await save(send=whatsapp_settings(whatsapp, concurrency=1))
    execution_id = await start(client, api_key, csv_data=rows(10), workflow_id=WORKFLOW_ID)
    await run_worker()
    await client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key))
    whatsapp.delay_seconds = 0.3
    sending = asyncio.create_task(run_worker())
    while len(whatsapp.requests) < 2:
        await asyncio.sleep(0.05)

    answer = await cancel(client, api_key, execution_id)
    asked_at_cancel = len(whatsapp.requests)
    await asyncio.wait_for(sending, 60)

    assert answer.status_code == 200
    assert len(whatsapp.requests) <= asked_at_cancel + 1  # at most the call in flight
    output = (await results(client, api_key, execution_id))["output"]
    statuses = [r["status"] for r in output["results"]]
    assert statuses.count("sent") == len(whatsapp.requests) == output["successCount"]
    assert set(statuses) == {"sent", "cancelled"}
    assert statuses == sorted(statuses, key=lambda s: s != "sent")  # sent first, in order
    for row in output["results"]:
        if row["status"] == "cancelled":
            assert row == {"customerId": row["customerId"], **CANCELLED_ROW}
    states = await row_states(execution_id)
    assert not [s for s in states if s["send_status"] == "sending"]
    stored = await execution_row(execution_id)
    assert stored["status"] == "cancelled" and stored["lease_token"] is None


async def test_a_cancel_records_the_execution_cancelled_event(
    client: httpx.AsyncClient, run_worker: Any
) -> None:
    from tests.factories import create_key

    new = await create_key(webhook_url="http://127.0.0.1:9/hook")
    execution_id = await start(client, new.secret, csv_data=rows(1))
    await cancel(client, new.secret, execution_id)

    events = await WebhookEvent.select(WebhookEvent.event, WebhookEvent.payload)
    assert [e["event"] for e in events] == ["execution.cancelled"]
    assert '"approvalStatus":null' in events[0]["payload"]
