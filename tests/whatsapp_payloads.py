"""Helpers for the WhatsApp webhook tests: Meta's payload shapes
(developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages),
signatures, settings with the app secret and verify token, and a run sent through the fake
Cloud API."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar

from tests import factories
from tests.factories import PUBLIC, auth, rows, start
from tests.fake_providers import FakeWhatsAppCloud
from tests.worker.test_providers import WHATSAPP_TOKEN_ENV, approve, save, whatsapp_settings
from web.app import create_app
from web.settings import Settings, get_settings

APP_SECRET = "whatsapp-app-secret-for-tests"
VERIFY_TOKEN = "verify-token-for-tests"
HOOK = "/webhooks/whatsapp"
BUSINESS_NUMBER_ID = "106540352242922"


def settings(**overrides: Any) -> Settings:
    return dataclasses.replace(
        get_settings(),
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        **overrides,
    )


def webhook_app() -> Litestar:
    return create_app(settings())


async def http_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        factories.serving(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
        ) as test_client,
    ):
        yield test_client


def fake_cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWhatsAppCloud]:
    token = "EAAG" + secrets.token_urlsafe(32)
    monkeypatch.setenv(WHATSAPP_TOKEN_ENV, token)
    server = FakeWhatsAppCloud(token)
    server.start()
    yield server
    server.stop()


# --- Meta's payloads -------------------------------------------------------------------------


def notification(*, statuses: list[dict[str, Any]] | None = None,
                 messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": BUSINESS_NUMBER_ID},
    }
    if statuses is not None:
        value["statuses"] = statuses
    if messages is not None:
        value["contacts"] = [
            {"profile": {"name": "Sheena Nelson"}, "wa_id": m["from"]} for m in messages
        ]
        value["messages"] = messages
    field = "messages"  # statuses and inbound messages both come on the `messages` field
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": field}]}],
    }


def status(message_id: str, name: str, recipient: str, code: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": message_id,
        "status": name,
        "timestamp": str(int(time.time())),
        "recipient_id": recipient,
    }
    if name in ("sent", "delivered"):
        item["conversation"] = {
            "id": "CONVERSATION_ID",
            "origin": {"type": "marketing"},
            "expiration_timestamp": str(int(time.time()) + 86400),
        }
        item["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "marketing"}
    if name == "failed":
        item["errors"] = [
            {
                "code": code or 131026,
                "title": "Message undeliverable",
                "message": "Message undeliverable",
                "error_data": {"details": "Message Undeliverable."},
                "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
            }
        ]
    return item


def text_message(sender: str, body: str) -> dict[str, Any]:
    return {
        "from": sender,
        "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": body},
    }


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_notification(
    client: httpx.AsyncClient, payload: dict[str, Any], signature: str | None = "valid"
) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if signature == "valid":
        headers["X-Hub-Signature-256"] = sign(body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return await client.post(HOOK, content=body, headers=headers)


async def deliver(client: httpx.AsyncClient, run_worker: Any, *statuses: dict[str, Any]) -> None:
    """Each status in its own notification, as Meta sends them, processed in this order."""
    for item in statuses:
        response = await post_notification(client, notification(statuses=[item]))
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "received"}
        await run_worker(settings())


async def sent_run(
    client: httpx.AsyncClient, run_worker: Any, whatsapp: FakeWhatsAppCloud, api_key: str,
    count: int = 3,
) -> tuple[str, dict[str, str]]:  # fmt: skip
    """A run sent through the fake Cloud API: its id, and {digits of phone: wamid}."""
    workflow_id = await save(send=whatsapp_settings(whatsapp))
    execution_id = await start(client, api_key, csv_data=rows(count), workflow_id=workflow_id)
    await run_worker(settings())
    await approve(client, api_key, execution_id)
    await run_worker(settings())
    return execution_id, {to: message_id for to, _, message_id in whatsapp.sent}


async def results(client: httpx.AsyncClient, api_key: str, execution_id: str) -> dict[str, Any]:
    response = await client.get(
        f"{PUBLIC}/executions/{execution_id}/results", headers=auth(api_key)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def digits(index: int) -> str:
    return rows(index + 1)[index]["phone"].lstrip("+")
