"""Signed webhooks: events of a real run delivered to a real receiver, retries, the log,
redelivery and the URL rules."""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import hmac
import itertools
import json
import re
import shutil
import socket
import subprocess
import sys
from typing import Any
from uuid import UUID, uuid4

import httpx
import msgspec
import pytest

from tests.factories import PUBLIC, auth, create_key, rows, start
from tests.receiver import Receiver
from web.domain import addresses, approvals, execution_rows, executions
from web.domain.tables import ApiKey, Execution, WebhookAttempt, WebhookEvent
from web.domain.workflows import BFSI_TEMPLATE, save_workflow
from web.settings import get_settings

SECRET = "your-webhook-secret-key"
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


async def hooked_key(receiver: Receiver, **kwargs: Any) -> str:
    options: dict[str, Any] = {"webhook_url": receiver.url, "webhook_secret": SECRET}
    options.update(kwargs)
    return (await create_key(**options)).secret


async def run_to_completion(client: httpx.AsyncClient, secret: str, run_worker: Any) -> str:
    execution_id = await start(client, secret, csv_data=rows(3))
    await run_worker()
    approved = await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(secret)
    )
    assert approved.status_code == 200
    await run_worker()
    return execution_id


async def test_a_full_run_sends_each_event_in_order_with_the_spec_payload_and_headers(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    secret = await hooked_key(receiver)

    execution_id = await run_to_completion(client, secret, run_worker)

    requests = await receiver.wait_for(3)
    assert [r.headers["x-webhook-event"] for r in requests] == [
        "execution.started",
        "execution.pending_approval",
        "execution.completed",
    ]
    status = (
        await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(secret))
    ).json()
    bodies = [json.loads(r.body) for r in requests]
    for body in bodies:
        assert re.fullmatch(ISO, body.pop("timestamp"))
    assert bodies == [
        {
            "event": "execution.started",
            "executionId": execution_id,
            "workflowId": "workflow_bfsi_marketing_template",
            "data": {"status": "running", "startedAt": status["startedAt"], "completedAt": None},
        },
        {
            "event": "execution.pending_approval",
            "executionId": execution_id,
            "workflowId": "workflow_bfsi_marketing_template",
            "data": {
                "status": "pending_approval",
                "startedAt": status["startedAt"],
                "completedAt": None,
            },
        },
        {
            "event": "execution.completed",
            "executionId": execution_id,
            "workflowId": "workflow_bfsi_marketing_template",
            "data": {
                "status": "completed",
                "startedAt": status["startedAt"],
                "completedAt": status["completedAt"],
                "output": {"successCount": 3, "failedCount": 0},
            },
        },
    ]
    for request in requests:
        headers = request.headers
        assert request.path == "/hooks"
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"] == "Workflow-Automation-Platform/1.0"
        assert headers["x-webhook-execution-id"] == execution_id
        expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert headers["x-webhook-signature"] == expected
        assert re.fullmatch(r"\d{10}", headers["webhook-timestamp"])
        UUID(headers["webhook-id"])
    assert len({r.headers["webhook-id"] for r in requests}) == 3


def verify_standard_webhooks(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks check a receiver would write (README shows the same)."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest())
    return any(
        hmac.compare_digest(sig.removeprefix("v1,"), expected.decode())
        for sig in headers["webhook-signature"].split()
    )


NODE_VERIFY = """
const crypto = require('crypto');
const fs = require('fs');
function verifyWebhookSignature(payload, signature, secret) {
  const expectedSignature = `sha256=${crypto
    .createHmac('sha256', secret)
    .update(payload)
    .digest('hex')}`;
  return crypto.timingSafeEqual(Buffer.from(signature), Buffer.from(expectedSignature));
}
const payload = fs.readFileSync(process.argv[2]).toString('utf8');
process.stdout.write(String(verifyWebhookSignature(payload, process.argv[3], process.argv[4])));
"""


async def test_signatures_verify_with_the_spec_node_code_and_standard_webhooks(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any, tmp_path: Any
) -> None:
    secret = await hooked_key(receiver)
    data = rows(1, name="Zoë Ünïcode “quoted”")
    await start(client, secret, csv_data=data)
    await run_worker()
    requests = await receiver.wait_for(2)

    for request in requests:
        assert verify_standard_webhooks(SECRET, request.headers, request.body)
        assert not verify_standard_webhooks("wrong secret", request.headers, request.body)
        node = shutil.which("node")
        if node is None:
            pytest.skip("node is not installed")
        body_file = tmp_path / "body.json"
        body_file.write_bytes(request.body)
        script = tmp_path / "verify.js"
        script.write_text(NODE_VERIFY)
        verdict = subprocess.run(
            [node, str(script), str(body_file), request.headers["x-webhook-signature"], SECRET],
            capture_output=True,
            text=True,
            check=True,
        )
        assert verdict.stdout == "true"


async def test_without_a_secret_no_signature_headers_are_sent(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    secret = await hooked_key(receiver, webhook_secret=None)
    await start(client, secret)
    await run_worker()

    requests = await receiver.wait_for(2)

    for request in requests:
        assert "x-webhook-signature" not in request.headers
        assert "webhook-signature" not in request.headers
        assert request.headers["webhook-id"]


async def test_only_the_events_the_key_asked_for_are_sent(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    secret = await hooked_key(receiver, webhook_events=["execution.completed"])

    await run_to_completion(client, secret, run_worker)

    requests = await receiver.wait_for(1)
    assert [r.headers["x-webhook-event"] for r in requests] == ["execution.completed"]
    assert await WebhookEvent.count() == 1


@pytest.mark.parametrize("end", ["completed", "failed"])
async def test_a_webhook_set_while_a_run_works_still_gets_the_runs_end(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any, end: str
) -> None:
    # The worker claims the approved run of a key without a webhook, so its end would record
    # no event and need no transaction; the URL is set before the end: the event is recorded.
    key = await create_key()
    execution_id = await start(client, key.secret, csv_data=rows(2))
    await run_worker()
    approved = await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(key.secret)
    )
    assert approved.status_code == 200
    claim = await executions.claim(UUID(execution_id), uuid4(), lease_seconds=30)
    assert claim is not None and claim.webhook_events == ()
    await ApiKey.update(
        {ApiKey.webhook_url: receiver.url, ApiKey.webhook_events: [f"execution.{end}"]}
    ).where(ApiKey.id == key.id)

    if end == "completed":
        queued = await executions.complete(claim)
    else:
        queued = await executions.fail(claim, "Step 4 (Send WhatsApp message) failed: boom")

    events = await WebhookEvent.select(WebhookEvent.id, WebhookEvent.event).where(
        WebhookEvent.execution == UUID(execution_id)
    )
    assert [e["event"] for e in events] == [f"execution.{end}"]
    assert queued == [events[0]["id"]]
    status = await client.get(
        f"{PUBLIC}/executions/{execution_id}/status", headers=auth(key.secret)
    )
    assert status.json()["status"] == end


async def _claimed_at_approval(execution_id: UUID) -> executions.Claim:
    """A worker's claim of the run, its generate_content and compliance_check steps done."""
    claim = await executions.claim(execution_id, uuid4(), lease_seconds=30)
    assert claim is not None
    for index in (0, 1):
        assert await executions.finish_step(claim, index, {"index": index}, 30)
    return claim


async def test_a_webhook_set_while_a_run_works_still_gets_its_wait_for_approval(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    key = await create_key()
    execution_id = UUID(await start(client, key.secret, csv_data=rows(2)))
    claim = await _claimed_at_approval(execution_id)
    assert claim.webhook_events == ()
    await ApiKey.update(
        {ApiKey.webhook_url: receiver.url, ApiKey.webhook_events: ["execution.pending_approval"]}
    ).where(ApiKey.id == key.id)

    queued = await approvals.start_waiting(claim, 2, smtp=False)

    events = await WebhookEvent.select(WebhookEvent.id, WebhookEvent.event).where(
        WebhookEvent.execution == execution_id
    )
    assert [e["event"] for e in events] == ["execution.pending_approval"]
    assert queued is not None and queued.events == [events[0]["id"]]
    assert queued.deadline is None  # the template's approval step has no timeout
    status = await client.get(
        f"{PUBLIC}/executions/{execution_id}/status", headers=auth(key.secret)
    )
    assert status.json()["status"] == "pending_approval"
    # Without a webhook wanting it, the wait is one statement and records no event.
    other = UUID(await start(client, key.secret, csv_data=rows(1)))
    await ApiKey.update({ApiKey.webhook_url: ""}).where(ApiKey.id == key.id)
    second = await _claimed_at_approval(other)
    assert (
        await approvals.start_waiting(dataclasses.replace(second, token=uuid4()), 2, smtp=False)
        is None
    )
    waiting = await approvals.start_waiting(second, 2, smtp=False)
    assert waiting is not None and waiting.events == [] and waiting.deadline is None
    assert await WebhookEvent.count().where(WebhookEvent.execution == other) == 0


async def test_a_run_whose_key_wants_no_event_ends_without_one_and_a_lost_lease_ends_nothing(
    client: httpx.AsyncClient, run_worker: Any
) -> None:
    key = await create_key()
    execution_id = UUID(await start(client, key.secret, csv_data=rows(2)))
    claim = await executions.claim(execution_id, uuid4(), lease_seconds=30)
    assert claim is not None and claim.events == []
    taken_over = await executions.claim(execution_id, uuid4(), lease_seconds=30)
    assert taken_over is None  # the lease is live: nobody else takes the run

    stale = dataclasses.replace(claim, token=uuid4())  # a worker whose lease was taken
    assert await executions.complete(stale) is None
    assert await executions.complete(claim) == []

    assert await WebhookEvent.count() == 0
    status = await client.get(
        f"{PUBLIC}/executions/{execution_id}/status", headers=auth(key.secret)
    )
    assert status.json()["status"] == "completed"


async def _stored(execution_id: UUID) -> dict[str, Any]:
    """The execution's row as stored (JSONB columns as text)."""
    found = await Execution.select().where(Execution.id == execution_id).first()
    assert found is not None
    return found


@pytest.mark.parametrize("hooked", [False, True], ids=["alone", "with_its_event"])
async def test_the_last_steps_result_is_saved_with_the_completion_or_not_at_all(
    client: httpx.AsyncClient, receiver: Receiver, hooked: bool
) -> None:
    secret = await hooked_key(receiver) if hooked else (await create_key()).secret
    execution_id = UUID(await start(client, secret, csv_data=rows(2)))
    claim = await _claimed_at_approval(execution_id)
    assert await executions.finish_step(claim, 2, {"index": 2}, 30)
    # The rows as the send step saved them and handed them on.
    sent = [
        msgspec.structs.replace(row, send_status="sent", message_id=f"m{row.position}")
        for row in await execution_rows.load(execution_id)
    ]
    last = {"index": 3, "type": "send_message", "sent": 2}

    stale = dataclasses.replace(claim, token=uuid4())  # a worker whose lease was taken
    assert await executions.complete(stale, (3, last), sent) is None
    before = await _stored(execution_id)
    assert (before["status"], before["current_step"], before["output"]) == ("running", 3, None)
    assert len(json.loads(before["step_results"])) == 3

    events = await executions.complete(claim, (3, last), sent)

    done = await _stored(execution_id)
    assert (done["status"], done["current_step"]) == ("completed", 4)
    assert json.loads(done["step_results"])[3] == last
    assert json.loads(done["output"]) == {
        "successCount": 2,
        "failedCount": 0,
        "results": [
            {"customerId": "CUST001", "status": "sent", "messageId": "m0"},
            {"customerId": "CUST002", "status": "sent", "messageId": "m1"},
        ],
    }
    recorded = await WebhookEvent.select(WebhookEvent.id).where(
        WebhookEvent.event == "execution.completed"
    )
    assert len(recorded) == (1 if hooked else 0)
    # Queued now, or after the run's earlier events (execution.started) are delivered.
    assert events is not None and set(events) <= {e["id"] for e in recorded}
    assert await executions.complete(claim, (3, last), sent) is None  # done once only


@pytest.mark.parametrize("hooked", [False, True], ids=["alone", "with_its_event"])
async def test_the_step_before_an_approval_is_saved_with_the_wait_or_not_at_all(
    client: httpx.AsyncClient, receiver: Receiver, hooked: bool
) -> None:
    secret = await hooked_key(receiver) if hooked else (await create_key()).secret
    execution_id = UUID(await start(client, secret, csv_data=rows(2)))
    claim = await executions.claim(execution_id, uuid4(), lease_seconds=30)
    assert claim is not None
    assert await executions.finish_step(claim, 0, {"index": 0}, 30)
    checked = {"index": 1, "type": "compliance_check", "passed": 2, "failed": 0}

    stale = dataclasses.replace(claim, token=uuid4())  # a worker whose lease was taken
    assert await approvals.start_waiting(stale, 2, smtp=False, step_before=(1, checked)) is None
    before = await _stored(execution_id)
    assert (before["status"], before["current_step"]) == ("running", 1)
    assert len(json.loads(before["step_results"])) == 1

    queued = await approvals.start_waiting(claim, 2, smtp=False, step_before=(1, checked))

    assert queued is not None
    waiting = await _stored(execution_id)
    assert (waiting["status"], waiting["current_step"]) == ("pending_approval", 2)
    assert json.loads(waiting["step_results"]) == [{"index": 0}, checked]
    recorded = await WebhookEvent.select(WebhookEvent.id).where(
        WebhookEvent.event == "execution.pending_approval"
    )
    assert len(recorded) == (1 if hooked else 0)
    assert set(queued.events) <= {e["id"] for e in recorded}
    assert await approvals.start_waiting(claim, 2, smtp=False, step_before=(1, checked)) is None


async def test_a_failed_run_sends_execution_failed_with_the_error(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = "workflow_broken"
    definition["steps"][0]["settings"]["template"] = "{{ name | nope }}"
    await save_workflow(definition)
    secret = await hooked_key(receiver)
    execution_id = await start(client, secret, workflow_id="workflow_broken")

    await run_worker()

    requests = await receiver.wait_for(2)
    failed = json.loads(requests[1].body)
    assert failed["event"] == "execution.failed"
    assert failed["executionId"] == execution_id
    assert failed["data"]["status"] == "failed"
    assert failed["data"]["error"].startswith("Step 1 (Generate personalised message) failed")
    assert re.fullmatch(ISO, failed["data"]["completedAt"])


async def test_failures_are_retried_on_schedule_then_given_up_with_every_attempt_logged(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    secret = await hooked_key(receiver, webhook_events=["execution.started"])
    receiver.respond_with(500, 503, 500, 502)
    execution_id = await start(client, secret)

    await run_worker()

    requests = await receiver.wait_for(4)
    assert len(requests) == 4
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    delays = get_settings().webhook_retry_delays  # 0.1, 0.5, 1.5 in tests (1, 5, 15 s live)
    for gap, delay in zip(gaps, delays, strict=True):
        assert delay * 0.9 <= gap < delay + 1.0
    assert len({r.headers["webhook-id"] for r in requests}) == 1  # the same event each time
    assert len({r.body for r in requests}) == 1
    event = await WebhookEvent.select().first()
    assert event is not None and event["status"] == "failed"
    attempts = await WebhookAttempt.select().order_by(WebhookAttempt.attempt_number)
    assert [(a["attempt_number"], a["status_code"]) for a in attempts] == [
        (1, 500),
        (2, 503),
        (3, 500),
        (4, 502),
    ]
    assert all(a["url"] == receiver.url for a in attempts)
    assert attempts[0]["response_body"] == ("receiver says no" * 100)[:1024]
    # The receiver's trouble never touched the run itself.
    assert (
        await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(secret))
    ).json()["status"] == "pending_approval"


async def test_a_receiver_that_hangs_times_out_and_the_retry_succeeds(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    secret = await hooked_key(receiver, webhook_events=["execution.started"])
    receiver.respond_with("hang", "close")

    await start(client, secret)
    await run_worker()

    await receiver.wait_for(3)
    attempts = await WebhookAttempt.select().order_by(WebhookAttempt.attempt_number)
    assert attempts[0]["error"] == "Timed out after 1 s"  # FLOWGATE_WEBHOOK_TIMEOUT_SECONDS
    assert 900 <= attempts[0]["duration_ms"] < 3000
    assert attempts[1]["status_code"] is None and attempts[1]["error"]
    assert attempts[2]["status_code"] == 200 and attempts[2]["error"] is None
    event = await WebhookEvent.select(WebhookEvent.status).first()
    assert event == {"status": "delivered"}


async def test_events_of_an_execution_wait_for_the_earlier_one(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    secret = await hooked_key(receiver)
    receiver.respond_with(500, 500)  # execution.started fails twice before it gets through

    await start(client, secret)
    await run_worker()

    requests = await receiver.wait_for(4)
    assert [r.headers["x-webhook-event"] for r in requests] == [
        "execution.started",
        "execution.started",
        "execution.started",
        "execution.pending_approval",
    ]


async def test_a_receiver_that_is_down_never_delays_or_fails_the_run(
    client: httpx.AsyncClient, run_worker: Any
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    secret = (await create_key(webhook_url=f"http://127.0.0.1:{port}/nobody")).secret

    execution_id = await run_to_completion(client, secret, run_worker)

    status = (
        await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(secret))
    ).json()
    assert status["status"] == "completed"
    events = await WebhookEvent.select(WebhookEvent.event, WebhookEvent.status).order_by(
        WebhookEvent.sequence
    )
    assert events == [
        {"event": e, "status": "failed"}
        for e in ("execution.started", "execution.pending_approval", "execution.completed")
    ]
    assert await WebhookAttempt.count() == 12  # 4 attempts each, all logged
    attempt = await WebhookAttempt.select(WebhookAttempt.error).first()
    assert attempt is not None and attempt["error"].startswith("ConnectError")


def flowgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web.cli", *args], capture_output=True, text=True, check=False
    )


async def test_redelivery_sends_the_same_event_again_and_the_log_shows_it(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    secret = await hooked_key(receiver, webhook_events=["execution.started"])
    execution_id = await start(client, secret)
    await run_worker()
    (first,) = await receiver.wait_for(1)
    event = await WebhookEvent.select(WebhookEvent.id).first()
    assert event is not None

    result = flowgate("webhooks", "redeliver", str(event["id"]))
    assert result.returncode == 0, result.stderr
    await run_worker()

    second = (await receiver.wait_for(2))[1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == str(event["id"])
    assert second.body == first.body
    assert second.headers["x-webhook-signature"] == first.headers["x-webhook-signature"]
    listed = flowgate("webhooks", "list", "--execution", execution_id, "--json")
    assert listed.returncode == 0, listed.stderr
    (logged,) = json.loads(listed.stdout)
    assert logged["event"] == "execution.started"
    assert logged["status"] == "delivered"
    assert [a["attempt_number"] for a in logged["attempts_log"]] == [1, 2]
    assert [a["status_code"] for a in logged["attempts_log"]] == [200, 200]
    text = flowgate("webhooks", "list", "--execution", execution_id)
    assert "attempt 2" in text.stdout and SECRET not in text.stdout


async def test_a_host_name_resolving_to_loopback_is_refused_when_sending(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    name = socket.gethostname()
    try:
        address = socket.getaddrinfo(name, 80)[0][4][0]
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if addresses.is_public_address(str(address)):
        pytest.skip(f"{name!r} resolves to a public address here")
    port = receiver.url.split(":")[2].split("/")[0]
    secret = await hooked_key(receiver, webhook_url=f"http://{name}:{port}/hooks")
    strict = dataclasses.replace(get_settings(), webhook_allow_private=False)

    await start(client, secret)
    await run_worker(settings=strict)

    assert receiver.requests == []
    attempt = await WebhookAttempt.select(WebhookAttempt.error).first()
    assert attempt is not None
    assert attempt["error"] == (
        f"Refused: {name} resolves to a private or loopback address ({address})"
    )
