"""Opt-outs: inbound WhatsApp replies (STOP, UNSUBSCRIBE, START) through the real webhook and
worker, the suppression list in the dashboard, and what a suppressed row becomes: skipped before
any content is generated (no LLM call), and stopped before sending when the opt-out arrives
while the execution waits for approval (the fake WhatsApp server receives nothing for it)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar

from tests import factories
from tests.factories import PUBLIC, auth, post_form, rows, start
from tests.fake_providers import FakeChatCompletions, FakeWhatsAppCloud
from tests.whatsapp_payloads import (
    fake_cloud,
    http_client,
    notification,
    post_notification,
    results,
    settings,
    text_message,
    webhook_app,
)
from tests.worker.test_providers import (
    LLM_KEY_ENV,
    approve,
    llm_settings,
    save,
    whatsapp_settings,
)
from web.domain import suppressions
from web.domain.tables import Suppression


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


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeChatCompletions]:
    key = "sk-test-" + secrets.token_urlsafe(24)
    monkeypatch.setenv(LLM_KEY_ENV, key)
    server = FakeChatCompletions(key)
    server.start()
    yield server
    server.stop()


async def listed() -> list[dict[str, Any]]:
    return list(
        await Suppression.select(Suppression.phone, Suppression.reason, Suppression.source)
        .order_by(Suppression.phone)
    )  # fmt: skip


async def reply(client: httpx.AsyncClient, run_worker: Any, sender: str, body: str) -> None:
    payload = notification(messages=[text_message(sender, body)])
    response = await post_notification(client, payload)
    assert response.status_code == 200, response.text
    await run_worker(settings())


# --- inbound keywords ------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["STOP", "stop", " Unsubscribe ", "un subscribe"])
async def test_an_opt_out_reply_adds_the_sender_in_e164(
    client: httpx.AsyncClient, run_worker: Any, body: str
) -> None:
    await reply(client, run_worker, "919876543210", body)

    assert await listed() == [
        {"phone": "+919876543210", "reason": f"Replied {''.join(body.split()).upper()}",
         "source": "inbound"},
    ]  # fmt: skip


async def test_start_takes_the_sender_off_the_list_and_other_texts_change_nothing(
    client: httpx.AsyncClient, run_worker: Any
) -> None:
    await reply(client, run_worker, "919876543210", "STOP")
    await reply(client, run_worker, "919800000001", "STOP")
    await reply(client, run_worker, "919876543210", "please stop")  # not the keyword alone
    assert len(await listed()) == 2

    await reply(client, run_worker, "919876543210", "start")

    assert [row["phone"] for row in await listed()] == ["+919800000001"]


async def test_the_keywords_are_configurable(client: httpx.AsyncClient, run_worker: Any) -> None:
    custom = settings(opt_out_keywords=("BAS",), opt_in_keywords=("SHURU",))
    for body in ("STOP", "bas"):
        payload = notification(messages=[text_message("919876543210", body)])
        assert (await post_notification(client, payload)).status_code == 200
        await run_worker(custom)
    assert [row["reason"] for row in await listed()] == ["Replied BAS"]

    payload = notification(messages=[text_message("919876543210", "Shuru")])
    assert (await post_notification(client, payload)).status_code == 200
    await run_worker(custom)
    assert await listed() == []


# --- suppressed rows -------------------------------------------------------------------------


async def test_a_suppressed_row_is_skipped_before_generation_and_the_llm_never_sees_it(
    client: httpx.AsyncClient,
    run_worker: Any,
    api_key: str,
    llm: FakeChatCompletions,
    whatsapp: FakeWhatsAppCloud,
    admin_client: httpx.AsyncClient,
) -> None:
    data = rows(3)
    await suppressions.add("+91 86105-00001", "asked by phone", suppressions.Source.CLI)
    workflow_id = await save(llm_settings(llm), whatsapp_settings(whatsapp))
    execution_id = await start(client, api_key, csv_data=data, workflow_id=workflow_id)
    await run_worker(settings())

    prompts = [FakeChatCompletions.prompt_of(r) for r in llm.requests]
    assert len(prompts) == 2 and not any("CUST002" in p for p in prompts)
    review = await admin_client.get(f"/dashboard/approvals/{execution_id}")
    assert review.status_code == 200 and "recipient opted out" in review.text

    await approve(client, api_key, execution_id)
    await run_worker(settings())

    assert sorted(to for to, _, _ in whatsapp.sent) == ["918610500000", "918610500002"]
    items = (await results(client, api_key, execution_id))["output"]["results"]
    assert items[1] == {
        "customerId": "CUST002",
        "status": "skipped",
        "messageId": None,
        "reason": "recipient opted out",
    }
    assert [item["status"] for item in items] == ["sent", "skipped", "sent"]


async def test_an_opt_out_while_waiting_for_approval_stops_the_send(
    client: httpx.AsyncClient, run_worker: Any, api_key: str, whatsapp: FakeWhatsAppCloud
) -> None:
    workflow_id = await save(send=whatsapp_settings(whatsapp))
    execution_id = await start(client, api_key, csv_data=rows(3), workflow_id=workflow_id)
    await run_worker(settings())
    status = await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(api_key))
    assert status.json()["status"] == "pending_approval"

    await reply(client, run_worker, "918610500002", "STOP")  # the third row's number
    await approve(client, api_key, execution_id)
    await run_worker(settings())

    assert sorted(to for to, _, _ in whatsapp.sent) == ["918610500000", "918610500001"]
    assert all(r.json["to"] != "918610500002" for r in whatsapp.requests)
    items = (await results(client, api_key, execution_id))["output"]["results"]
    assert items[2] == {
        "customerId": "CUST003",
        "status": "skipped",
        "messageId": None,
        "reason": "recipient opted out",
    }


# --- the dashboard page ----------------------------------------------------------------------

PAGE = "/dashboard/suppressions"


async def test_an_admin_adds_searches_and_removes_numbers(admin_client: httpx.AsyncClient) -> None:
    added = await post_form(admin_client, PAGE, {"phone": "0091 98765-43210", "reason": "call"})
    assert added.status_code == 303
    assert await listed() == [{"phone": "+919876543210", "reason": "call", "source": "dashboard"}]
    await post_form(admin_client, PAGE, {"phone": "+447700900123", "reason": ""})

    found = await admin_client.get(PAGE, params={"q": "98765"})
    assert found.status_code == 200
    assert 'id="suppression-919876543210"' in found.text
    assert 'id="suppression-447700900123"' not in found.text

    removed = await post_form(admin_client, f"{PAGE}/remove", {"phone": "+919876543210"})
    assert removed.status_code == 303 and removed.headers["location"] == PAGE
    assert [row["phone"] for row in await listed()] == ["+447700900123"]


async def test_a_number_not_in_e164_is_refused_next_to_its_field(
    admin_client: httpx.AsyncClient,
) -> None:
    response = await post_form(admin_client, PAGE, {"phone": "98765 43210", "reason": "x"})

    assert response.status_code == 400
    assert 'id="phone-error"' in response.text and "E.164" in response.text
    assert 'value="98765 43210"' in response.text
    assert await listed() == []


async def test_the_page_is_for_admins_and_needs_the_csrf_token(
    reviewer_client: httpx.AsyncClient, admin_client: httpx.AsyncClient
) -> None:
    assert (await reviewer_client.get(PAGE)).status_code == 403
    forged = await admin_client.post(PAGE, data={"phone": "+919876543210"})
    assert forged.status_code == 403
    assert await listed() == []


def test_phone_numbers_are_normalised_and_masked() -> None:
    assert suppressions.normalise("(+91) 98765-43210") == "+919876543210"
    assert suppressions.normalise("0044 7700 900123") == "+447700900123"
    for bad in ("9876543210", "+0123456789", "+91abc", "", "+1234567"):
        with pytest.raises(suppressions.FieldError):
            suppressions.normalise(bad)
    assert suppressions.mask("+919876543210") == "***********10"


async def test_factories_rows_phone_numbers_are_what_the_tests_expect() -> None:
    assert [row["phone"] for row in factories.rows(3)] == [
        "+918610500000", "+918610500001", "+918610500002",
    ]  # fmt: skip


def test_keyword_settings_are_read_upper_case_and_a_list_of_nothing_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from web.settings import SettingsError, get_settings

    monkeypatch.setenv("FLOWGATE_OPT_OUT_KEYWORDS", "stop, Un Subscribe ,ARRET")
    get_settings.cache_clear()
    try:
        assert get_settings().opt_out_keywords == ("STOP", "UNSUBSCRIBE", "ARRET")
        monkeypatch.setenv("FLOWGATE_OPT_IN_KEYWORDS", " , ")
        get_settings.cache_clear()
        with pytest.raises(SettingsError, match=r"^FLOWGATE_OPT_IN_KEYWORDS: expected"):
            get_settings()
        monkeypatch.setenv("FLOWGATE_OPT_IN_KEYWORDS", "START")
        monkeypatch.setenv("FLOWGATE_DELIVERY_WEBHOOK_INTERVAL_SECONDS", "soon")
        get_settings.cache_clear()
        with pytest.raises(SettingsError, match=r"^FLOWGATE_DELIVERY_WEBHOOK_INTERVAL_SECONDS"):
            get_settings()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


async def test_an_opt_out_arriving_while_the_rows_go_out_stops_the_rows_not_sent_yet(
    client: httpx.AsyncClient, run_worker: Any, api_key: str, whatsapp: FakeWhatsAppCloud
) -> None:
    from tests.fake_providers import Reply

    workflow_id = await save(send=whatsapp_settings(whatsapp, concurrency=1))
    execution_id = await start(client, api_key, csv_data=rows(3), workflow_id=workflow_id)
    await run_worker(settings())
    await approve(client, api_key, execution_id)
    whatsapp.respond_with(Reply(delay=0.5))  # the first send is slow

    async def opt_out_during_the_first_send() -> None:
        await whatsapp.wait_for(1)
        await suppressions.add("+918610500002", "STOP by SMS", suppressions.Source.CLI)

    await asyncio.gather(run_worker(settings()), opt_out_during_the_first_send())

    assert [r.json["to"] for r in whatsapp.requests] == ["918610500000", "918610500001"]
    items = (await results(client, api_key, execution_id))["output"]["results"]
    assert [(i["status"], i.get("reason")) for i in items] == [
        ("sent", None), ("sent", None), ("skipped", "recipient opted out"),
    ]  # fmt: skip


async def test_a_notification_of_an_unexpected_shape_is_acknowledged_and_kept_with_its_error(
    client: httpx.AsyncClient, run_worker: Any
) -> None:
    from web.domain.tables import WhatsAppNotification

    odd = notification(messages=[{"from": "919876543210", "type": "text", "text": "STOP"}])
    odd["entry"][0]["changes"][0]["value"]["statuses"] = "delivered"
    for payload in (odd, {"entry": "nope"}, [1, 2]):
        assert (await post_notification(client, payload)).status_code == 200  # type: ignore[arg-type]
    await run_worker(settings())

    stored = await WhatsAppNotification.select(WhatsAppNotification.processed_at)
    assert len(stored) == 3 and all(row["processed_at"] is not None for row in stored)
    assert await listed() == []
