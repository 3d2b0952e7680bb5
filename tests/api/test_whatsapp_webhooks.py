"""WhatsApp Cloud API webhooks through the real app and real workers: the verification
handshake, signatures, delivery statuses (in and out of order, repeated) in the results, unknown
message ids, the throttled `execution.delivery_updated` event. Payloads in Meta's shapes
(tests/whatsapp_payloads.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar

from tests import factories
from tests.factories import create_key, start
from tests.fake_providers import FakeWhatsAppCloud
from tests.receiver import Receiver
from tests.whatsapp_payloads import (
    HOOK,
    VERIFY_TOKEN,
    deliver,
    digits,
    fake_cloud,
    http_client,
    notification,
    post_notification,
    results,
    sent_run,
    settings,
    sign,
    status,
    webhook_app,
)
from tests.worker.test_providers import approve
from web.app import create_app
from web.domain.tables import WhatsAppNotification
from web.settings import get_settings


@pytest.fixture
def app(redis: Any) -> Litestar:
    return webhook_app()


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async for test_client in http_client(app):
        yield test_client


@pytest.fixture
def whatsapp(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWhatsAppCloud]:
    yield from fake_cloud(monkeypatch)


# --- the handshake ---------------------------------------------------------------------------


async def test_the_verification_handshake_echoes_the_challenge_as_plain_text(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        HOOK,
        params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
                "hub.challenge": "1158201444"},
    )  # fmt: skip

    assert response.status_code == 200
    assert response.text == "1158201444"
    assert response.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN},
        {},
    ],
)
async def test_a_handshake_with_anything_else_is_403(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get(HOOK, params=params)

    assert response.status_code == 403
    assert response.json() == {
        "message": "Verification failed",
        "error": "Forbidden",
        "statusCode": 403,
    }


async def test_without_a_verify_token_set_every_handshake_is_403(redis: Any) -> None:
    app = create_app(dataclasses.replace(get_settings(), whatsapp_verify_token=None))
    async with factories.serving(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
    ) as bare:  # fmt: skip
        response = await bare.get(
            HOOK, params={"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"}
        )
    assert response.status_code == 403


# --- signatures ------------------------------------------------------------------------------


async def _stored() -> int:
    return await WhatsAppNotification.count()


@pytest.mark.parametrize(
    "signature",
    [None, "sha256=" + "0" * 64, "sha256=", "not-a-signature", sign(b"{}", "another-secret")],
)
async def test_a_bad_or_missing_signature_is_401_and_stores_nothing(
    client: httpx.AsyncClient, signature: str | None
) -> None:
    response = await post_notification(
        client, notification(statuses=[status("wamid.X", "delivered", "919876543210")]), signature
    )

    assert response.status_code == 401
    assert response.json() == {
        "message": "Invalid or missing X-Hub-Signature-256",
        "error": "Unauthorized",
        "statusCode": 401,
    }
    assert await _stored() == 0


async def test_a_signature_of_other_bytes_than_the_raw_body_is_refused(
    client: httpx.AsyncClient,
) -> None:
    payload = notification(statuses=[status("wamid.X", "delivered", "919876543210")])
    body = json.dumps(payload, indent=2).encode()  # the same JSON, other bytes
    response = await client.post(
        HOOK, content=body, headers={"X-Hub-Signature-256": sign(json.dumps(payload).encode())}
    )
    assert response.status_code == 401
    assert await _stored() == 0


async def test_without_an_app_secret_notifications_are_refused_with_503(redis: Any) -> None:
    app = create_app(dataclasses.replace(get_settings(), whatsapp_app_secret=None))
    body = b"{}"
    async with factories.serving(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
    ) as bare:  # fmt: skip
        response = await bare.post(HOOK, content=body, headers={"X-Hub-Signature-256": sign(body)})
    assert response.status_code == 503
    assert response.json()["message"] == (
        "WhatsApp webhook is not configured: set FLOWGATE_WHATSAPP_APP_SECRET"
    )
    assert await _stored() == 0


async def test_a_body_over_the_limit_is_413_and_stores_nothing(redis: Any) -> None:
    app = create_app(settings(max_body_bytes=1024))
    body = json.dumps({"entry": [], "padding": "x" * 2000}).encode()
    async with factories.serving(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
    ) as small:  # fmt: skip
        response = await small.post(HOOK, content=body, headers={"X-Hub-Signature-256": sign(body)})
    assert response.status_code == 413
    assert await _stored() == 0


async def test_a_valid_notification_is_stored_as_received_and_processed_by_the_worker(
    client: httpx.AsyncClient, run_worker: Any
) -> None:
    payload = notification(statuses=[status("wamid.unknown", "delivered", "919876543210")])
    response = await post_notification(client, payload)

    assert response.status_code == 200
    (stored,) = await WhatsAppNotification.select().output(load_json=False)
    assert json.loads(stored["body"]) == payload and stored["processed_at"] is None

    await run_worker(settings())
    (stored,) = await WhatsAppNotification.select()
    assert stored["processed_at"] is not None and stored["error"] is None


async def test_the_webhook_routes_are_in_the_openapi_schema(client: httpx.AsyncClient) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    assert set(document["paths"][HOOK]) >= {"get", "post"}
    assert set(document["paths"][HOOK]["post"]["responses"]) >= {"200", "401", "503"}
    results_item = document["components"]["schemas"]["ResultItem"]["properties"]
    assert {"deliveryStatus", "deliveryError"} <= set(results_item)


# --- delivery statuses -----------------------------------------------------------------------


async def test_sent_rows_are_accepted_until_a_status_arrives_and_spec_fields_stay(
    client: httpx.AsyncClient, run_worker: Any, whatsapp: FakeWhatsAppCloud, api_key: str
) -> None:
    execution_id, ids = await sent_run(client, run_worker, whatsapp, api_key)

    body = await results(client, api_key, execution_id)
    assert body["status"] == "completed"
    assert body["output"] == {
        "successCount": 3,
        "failedCount": 0,
        "results": [
            {"customerId": f"CUST00{i + 1}", "status": "sent", "messageId": ids[digits(i)],
             "deliveryStatus": "accepted"}
            for i in range(3)
        ],
        "deliveryCounts": {"accepted": 3, "sent": 0, "delivered": 0, "read": 0, "failed": 0},
    }  # fmt: skip


async def test_statuses_move_forward_only_whatever_order_and_repeats_they_come_in(
    client: httpx.AsyncClient, run_worker: Any, whatsapp: FakeWhatsAppCloud, api_key: str
) -> None:
    execution_id, ids = await sent_run(client, run_worker, whatsapp, api_key, count=4)
    a, b, c, d = (ids[digits(i)] for i in range(4))
    await deliver(
        client,
        run_worker,
        # a: in order, each twice
        status(a, "sent", digits(0)), status(a, "sent", digits(0)),
        status(a, "delivered", digits(0)), status(a, "delivered", digits(0)),
        # b: read first, then a late delivered and sent: stays read; failed does not win either
        status(b, "read", digits(1)), status(b, "delivered", digits(1)),
        status(b, "sent", digits(1)), status(b, "failed", digits(1)),
        # c: delivered, then failed wins; a later read does not undo the final failed
        status(c, "delivered", digits(2)), status(c, "failed", digits(2)),
        status(c, "read", digits(2)), status(c, "delivered", digits(2)),
        # d: only sent
        status(d, "sent", digits(3)),
    )  # fmt: skip

    output = (await results(client, api_key, execution_id))["output"]
    found = [(r["status"], r["deliveryStatus"], r.get("deliveryError")) for r in output["results"]]
    assert found == [
        ("sent", "delivered", None),
        ("sent", "read", None),
        ("sent", "failed", "131026: Message undeliverable"),
        ("sent", "sent", None),
    ]  # fmt: skip
    assert output["deliveryCounts"] == {
        "accepted": 0, "sent": 1, "delivered": 1, "read": 1, "failed": 1,
    }  # fmt: skip
    assert output["successCount"] == 4 and output["failedCount"] == 0  # the spec's, unchanged


async def test_concurrent_notifications_for_one_row_end_at_the_highest_status(
    client: httpx.AsyncClient, run_worker: Any, whatsapp: FakeWhatsAppCloud, api_key: str
) -> None:
    execution_id, ids = await sent_run(client, run_worker, whatsapp, api_key, count=1)
    (message_id,) = ids.values()
    from web.domain import delivery_statuses

    order = ["read", "sent", "delivered"] * 10
    await asyncio.gather(*(delivery_statuses.apply_status(message_id, s, None) for s in order))

    output = (await results(client, api_key, execution_id))["output"]
    assert output["results"][0]["deliveryStatus"] == "read"


async def test_failed_with_another_code_reads_code_and_title(
    client: httpx.AsyncClient, run_worker: Any, whatsapp: FakeWhatsAppCloud, api_key: str
) -> None:
    execution_id, ids = await sent_run(client, run_worker, whatsapp, api_key, count=1)
    (message_id,) = ids.values()
    failed = status(message_id, "failed", digits(0), code=131049)
    failed["errors"][0]["title"] = (
        "This message was not delivered to maintain healthy ecosystem engagement."
    )
    await deliver(client, run_worker, failed)

    (item,) = (await results(client, api_key, execution_id))["output"]["results"]
    assert item["deliveryStatus"] == "failed"
    assert item["deliveryError"] == (
        "131049: This message was not delivered to maintain healthy ecosystem engagement."
    )


async def test_an_unknown_message_id_is_acknowledged_and_logged_without_personal_data(
    client: httpx.AsyncClient, run_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowgate.whatsapp")
    message_id = "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQUJDREVGMDEyMzQ1Njc4OQA="
    await deliver(client, run_worker, status(message_id, "delivered", "919876543210"))

    lines = [r.getMessage() for r in caplog.records if r.name == "flowgate.whatsapp"]
    assert any("no row has" in line for line in lines)
    assert not any(message_id in line or "919876543210" in line for line in lines)
    (stored,) = await WhatsAppNotification.select()
    assert stored["processed_at"] is not None


async def test_sandbox_rows_carry_no_delivery_fields(
    client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await start(client, api_key)
    await run_worker()
    await approve(client, api_key, execution_id)
    await run_worker()

    output = (await results(client, api_key, execution_id))["output"]
    assert "deliveryCounts" not in output
    assert all(set(item) == {"customerId", "status", "messageId"} for item in output["results"])


# --- execution.delivery_updated --------------------------------------------------------------


async def test_delivery_updated_is_sent_with_the_counts_at_most_once_per_interval(
    client: httpx.AsyncClient,
    run_worker: Any,
    whatsapp: FakeWhatsAppCloud,
    receiver: Receiver,
) -> None:
    key = await create_key(webhook_url=receiver.url, webhook_events=["execution.delivery_updated"])
    execution_id, ids = await sent_run(client, run_worker, whatsapp, key.secret, count=3)
    a, b, c = (ids[digits(i)] for i in range(3))
    interval = 1.5
    quick = settings(delivery_webhook_interval_seconds=interval)

    started = time.monotonic()
    first_status = notification(statuses=[status(a, "delivered", digits(0))])
    assert (await post_notification(client, first_status)).status_code == 200
    await run_worker(quick)  # the first change is told at once
    await receiver.wait_for(1)
    # Two more changes within the interval: one event for both, once the interval is up.
    for item in (status(b, "read", digits(1)), status(c, "failed", digits(2))):
        assert (await post_notification(client, notification(statuses=[item]))).status_code == 200
    await run_worker(quick)  # burst workers wait for the deferred look, then deliver it

    requests = await receiver.wait_for(2)
    assert len(requests) == 2
    first, second = (json.loads(r.body) for r in requests)
    assert first["event"] == second["event"] == "execution.delivery_updated"
    assert first["executionId"] == execution_id
    assert first["data"]["delivery"] == {
        "accepted": 2, "sent": 0, "delivered": 1, "read": 0, "failed": 0,
    }  # fmt: skip
    assert second["data"]["delivery"] == {
        "accepted": 0, "sent": 0, "delivered": 1, "read": 1, "failed": 1,
    }  # fmt: skip
    assert requests[1].at - requests[0].at >= interval - 0.1
    assert time.monotonic() - started >= interval

    # Nothing changed since: a repeated status sends nothing more.
    await deliver(client, run_worker, status(c, "failed", digits(2)))
    await asyncio.sleep(0.2)
    assert len(receiver.requests) == 2


async def test_delivery_updated_is_not_in_a_new_keys_default_events(receiver: Receiver) -> None:
    key = await create_key(webhook_url=receiver.url)
    from web.domain.tables import ApiKey

    row = await ApiKey.select(ApiKey.webhook_events).where(ApiKey.id == key.id).first()
    assert row is not None
    assert "execution.delivery_updated" not in row["webhook_events"]
    assert "execution.completed" in row["webhook_events"]


async def test_a_notification_whose_job_was_lost_is_queued_again_by_the_reconciler(
    client: httpx.AsyncClient, run_worker: Any, redis: Any
) -> None:
    from web.domain import recovery

    response = await post_notification(
        client, notification(statuses=[status("wamid.lost", "read", "919876543210")])
    )
    assert response.status_code == 200
    await redis.flushdb()  # Redis lost everything: the job is gone, the row is not
    (stored,) = await WhatsAppNotification.select(WhatsAppNotification.id)

    requeued = await recovery.requeue_stalled(redis, 0)
    assert requeued.whatsapp_notifications == [stored["id"]]
    await run_worker(settings())

    (processed,) = await WhatsAppNotification.select(WhatsAppNotification.processed_at)
    assert processed["processed_at"] is not None
    assert (await recovery.requeue_stalled(redis, 0)).whatsapp_notifications == []


async def test_opt_outs_and_statuses_log_no_phone_number_and_no_message_text(
    client: httpx.AsyncClient, run_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    payload = notification(
        statuses=[status("wamid.HBgMOTE5ODc2NTQzMjEw", "failed", "919876543210")],
        messages=[{"from": "919812345678", "id": "wamid.in", "timestamp": "1764650000",
                   "type": "text", "text": {"body": "STOP"}}],
    )  # fmt: skip
    assert (await post_notification(client, payload)).status_code == 200
    await run_worker(settings())

    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "opt-out by WhatsApp reply" in text
    for personal in ("919876543210", "919812345678", "wamid.HBgMOTE5ODc2NTQzMjEw", "Sheena"):
        assert personal not in text


async def test_the_execution_page_shows_the_delivery_counts_and_each_rows_status(
    client: httpx.AsyncClient,
    run_worker: Any,
    whatsapp: FakeWhatsAppCloud,
    api_key: str,
    admin_client: httpx.AsyncClient,
) -> None:
    execution_id, ids = await sent_run(client, run_worker, whatsapp, api_key, count=3)
    a, b, _ = (ids[digits(i)] for i in range(3))
    await deliver(client, run_worker, status(a, "read", digits(0)), status(b, "failed", digits(1)))

    page = await admin_client.get(f"/dashboard/executions/{execution_id}")

    assert page.status_code == 200
    counts = page.text.split('id="delivery-counts"')[1].split("</p>")[0]
    assert "<strong>0</strong> delivered" in counts and "<strong>1</strong> read" in counts
    assert "<strong>1</strong> failed" in counts and "<strong>1</strong> accepted" in counts
    assert "131026: Message undeliverable" in page.text


async def test_processed_notifications_are_purged_after_a_week_and_unprocessed_ones_kept(
    client: httpx.AsyncClient,
) -> None:
    from web.domain import whatsapp_inbound
    from web.domain.tables import WhatsAppNotification as Row

    for _ in range(3):
        assert (await post_notification(client, notification(statuses=[]))).status_code == 200
    ids = [row["id"] for row in await Row.select(Row.id).order_by(Row.received_at)]
    await Row.raw("UPDATE whatsapp_notification SET processed_at = now() - interval '8 days' "
                  "WHERE id = {}", ids[0])  # fmt: skip
    await Row.raw("UPDATE whatsapp_notification SET processed_at = now() - interval '6 days' "
                  "WHERE id = {}", ids[1])  # fmt: skip

    assert await whatsapp_inbound.purge_processed() == 1
    assert sorted(row["id"] for row in await Row.select(Row.id)) == sorted(ids[1:])
