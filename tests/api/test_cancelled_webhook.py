"""`execution.cancelled`: the end of a run that did not complete (a rejection, later a cancel
or an approval timeout) reaches the customer as a signed webhook like the other events. Keys
created from now on get it by default; a key's own event list is kept as it is."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from tests.factories import PUBLIC, auth, create_key, post_form, rows, start
from tests.receiver import Receiver
from web.domain import webhooks
from web.domain.tables import ApiKey, WebhookEvent

SECRET = "whsec_cancelled_test"
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


async def test_a_rejection_sends_execution_cancelled_signed_with_the_spec_headers(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    new = await create_key(webhook_url=receiver.url, webhook_secret=SECRET)
    stored = await ApiKey.select(ApiKey.webhook_events).where(ApiKey.id == new.id).first()
    assert stored is not None and "execution.cancelled" in stored["webhook_events"]
    execution_id = await start(client, new.secret, csv_data=rows(2))
    await run_worker()

    rejected = await client.post(
        f"{PUBLIC}/executions/{execution_id}/reject",
        json={"comment": "wrong segment"},
        headers=auth(new.secret),
    )
    assert rejected.status_code == 200
    await run_worker()

    requests = await receiver.wait_for(3)
    assert [r.headers["x-webhook-event"] for r in requests] == [
        "execution.started",
        "execution.pending_approval",
        "execution.cancelled",
    ]
    cancelled = requests[2]
    body = json.loads(cancelled.body)
    assert body == {
        "event": "execution.cancelled",
        "executionId": execution_id,
        "workflowId": "workflow_bfsi_marketing_template",
        "timestamp": body["timestamp"],
        "data": {
            "status": "cancelled",
            "startedAt": body["data"]["startedAt"],
            "completedAt": body["data"]["completedAt"],
            "approvalStatus": "rejected",
            "error": None,
        },
    }
    for moment in (body["timestamp"], body["data"]["startedAt"], body["data"]["completedAt"]):
        assert re.fullmatch(ISO, moment)
    assert cancelled.headers["x-webhook-execution-id"] == execution_id
    assert cancelled.headers["x-webhook-signature"] == webhooks.spec_signature(
        SECRET, cancelled.body
    )


async def test_a_key_with_its_own_event_list_is_not_sent_the_new_event(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    old_list = ["execution.started", "execution.completed", "execution.failed"]
    new = await create_key(webhook_url=receiver.url, webhook_events=old_list)
    execution_id = await start(client, new.secret, csv_data=rows(1))
    await run_worker()

    await client.post(f"{PUBLIC}/executions/{execution_id}/reject", headers=auth(new.secret))
    await run_worker()

    events = await WebhookEvent.select(WebhookEvent.event).order_by(WebhookEvent.sequence)
    assert [e["event"] for e in events] == ["execution.started"]


async def test_a_rejection_in_the_dashboard_sends_it_too(
    client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    receiver: Receiver,
    run_worker: Any,
) -> None:
    new = await create_key(webhook_url=receiver.url, webhook_events=["execution.cancelled"])
    execution_id = await start(client, new.secret, csv_data=rows(1))
    await run_worker()

    answer = await post_form(
        admin_client, f"/dashboard/approvals/{execution_id}/reject", {"confirmed": "yes"}
    )
    assert answer.status_code == 303
    await run_worker()

    (request,) = await receiver.wait_for(1)
    assert json.loads(request.body)["data"]["approvalStatus"] == "rejected"
