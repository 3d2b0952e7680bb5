"""web.domain.webhooks without a worker: which URLs may receive webhooks."""

from __future__ import annotations

import httpx
import pytest

from tests.factories import create_key
from web.domain import webhooks
from web.domain.errors import InvalidInput


def test_webhook_urls_must_be_https_and_public_unless_allowed() -> None:
    strict = {"allow_http": False, "allow_private": False}
    assert webhooks.check_url("https://hooks.example.com/x", **strict) == (
        "https://hooks.example.com/x"
    )
    for url, message in [
        ("ftp://hooks.example.com", "Webhook URL must be an http:// or https:// URL with a host"),
        ("https://", "Webhook URL must be an http:// or https:// URL with a host"),
        ("http://hooks.example.com", "Webhook URL must use https"),
        ("https://127.0.0.1/x", "Webhook URL must not point to a private or loopback address"),
        ("https://10.1.2.3/x", "Webhook URL must not point to a private or loopback address"),
        ("https://[::1]/x", "Webhook URL must not point to a private or loopback address"),
        ("https://localhost/x", "Webhook URL must not point to a private or loopback address"),
        ("https://169.254.169.254/", "Webhook URL must not point to a private or loopback address"),
    ]:
        with pytest.raises(InvalidInput) as refused:
            webhooks.check_url(url, **strict)
        assert refused.value.message == message, url
    assert webhooks.check_url("http://127.0.0.1:9/x", allow_http=True, allow_private=True)


async def test_creating_a_key_checks_its_webhook_url(client: httpx.AsyncClient) -> None:
    with pytest.raises(InvalidInput):
        await create_key(webhook_url="gopher://example.com")
    with pytest.raises(InvalidInput):
        await create_key(webhook_events=["execution.exploded"])
