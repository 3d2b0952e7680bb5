"""The SSRF policy (web.domain.addresses) where URLs are set and where they are called: webhook
URLs at key creation and at every attempt, provider URLs (`base_url`, `url`) at workflow import
and at every call, IPv6 spellings of IPv4 loopback/private addresses included (issue 12,
item 10)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import PUBLIC, auth, create_key, rows, start
from tests.fake_providers import FakeGateway
from tests.receiver import Receiver
from web.domain import webhooks
from web.domain.errors import InvalidInput
from web.domain.tables import WebhookAttempt, Workflow
from web.domain.workflows import BFSI_TEMPLATE, save_workflow
from web.settings import get_settings

REFUSED = "Webhook URL must not point to a private or loopback address"
# 127.0.0.1 and private IPv4 addresses written as IPv6 (brackets as in a URL), and other
# spellings the system resolver turns into 127.0.0.1.
LOOPBACK_FORMS = [
    "[::127.0.0.1]",  # IPv4-compatible
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:0:7f00:1]",  # IPv4-translated
    "[64:ff9b::7f00:1]",  # NAT64
    "[64:ff9b:1::a00:1]",  # local-use NAT64
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "[2002:a00:1::1]",  # 6to4 of 10.0.0.1
    "[2001:0:7f00:1::1]",  # Teredo
    "[::ffff:169.254.169.254]",  # the cloud metadata address, mapped
    "127.1",
    "2130706433",
    "0x7f.0.0.1",
    "localhost.",
    "app.localhost",
]
STRICT_ENV = {
    "FLOWGATE_WEBHOOK_ALLOW_PRIVATE": "false",
    "FLOWGATE_PROVIDER_ALLOW_PRIVATE": "false",
}


def flowgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
    )


def strict_settings() -> Any:
    return dataclasses.replace(
        get_settings(), webhook_allow_private=False, provider_allow_private=False
    )


def test_ipv6_and_numeric_forms_of_private_addresses_are_refused_as_webhook_urls() -> None:
    for host in LOOPBACK_FORMS:
        with pytest.raises(InvalidInput) as refused:
            webhooks.check_url(f"https://{host}/hooks", allow_http=False, allow_private=False)
        assert refused.value.message == REFUSED, host
    # Public addresses, in the same spellings, still pass.
    for host in ("[2606:4700:4700::1111]", "[64:ff9b::808:808]", "[::ffff:8.8.8.8]", "8.8.8.8"):
        url = f"https://{host}/hooks"
        assert webhooks.check_url(url, allow_http=False, allow_private=False) == url


def test_creating_a_key_with_such_a_webhook_url_is_refused_and_writes_nothing(
    db_pool: None,
) -> None:
    url = "https://[64:ff9b::7f00:1]/hooks"  # NAT64 of 127.0.0.1
    created = flowgate("keys", "create", "--name", "ssrf", "--webhook-url", url, env=STRICT_ENV)
    assert created.returncode == 1
    assert created.stderr.strip() == f"error: {REFUSED}"
    listed = flowgate("keys", "list", "--json", env=STRICT_ENV)
    assert json.loads(listed.stdout) == []


async def test_such_webhook_urls_are_refused_at_send_time_and_nothing_is_sent(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    port = receiver.url.split(":")[-1].split("/")[0]
    forms = ["[::127.0.0.1]", "[::ffff:0:7f00:1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]"]
    for host in forms:  # stored while private addresses were allowed, sent after they are not
        secret = (
            await create_key(
                webhook_url=f"http://{host}:{port}/hooks", webhook_events=["execution.started"]
            )
        ).secret
        await start(client, secret)

    await run_worker(settings=strict_settings())

    assert receiver.requests == []
    attempts = await WebhookAttempt.select(WebhookAttempt.url, WebhookAttempt.error)
    assert sorted(attempts, key=lambda a: a["url"]) == sorted(
        (
            {"url": f"http://{host}:{port}/hooks", "error": f"Refused: {REFUSED}"}
            for host in forms
            for _ in range(4)  # every attempt of the schedule, each refused
        ),
        key=lambda a: a["url"],
    )


def _gateway_workflow(url: str, workflow_id: str = "workflow_ssrf") -> dict[str, Any]:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = workflow_id
    definition["steps"][3]["settings"] = {
        "channel": "whatsapp",
        "provider": "http",
        "url": url,
        "retry_backoff_seconds": 0.01,
    }
    return definition


def test_importing_a_workflow_with_a_private_provider_url_is_refused_naming_it(
    db_pool: None, tmp_path: Path
) -> None:
    definition = _gateway_workflow("http://[::ffff:127.0.0.1]:8080/send")
    definition["steps"][0]["settings"] = {
        "provider": "openai_compatible",
        "base_url": "http://localhost:11434/v1",
        "model": "llama3",
        "api_key_env": "OLLAMA_KEY",
        "prompt_template": "Hi {{ name }}",
    }
    path = tmp_path / "ssrf.json"
    path.write_text(json.dumps(definition))

    refused = flowgate("workflows", "import", str(path), env=STRICT_ENV)

    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"error: {path}: steps[0].settings.base_url: "
        "must not point to a private or loopback address",
        f"error: {path}: steps[3].settings.url: must not point to a private or loopback address",
    ]
    # With the local-development allowance (as .dev/env sets it) the same file is imported.
    allowed = flowgate(
        "workflows", "import", str(path), env={"FLOWGATE_PROVIDER_ALLOW_PRIVATE": "true"}
    )
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == "created workflow workflow_ssrf"


async def test_a_provider_url_resolving_to_loopback_is_refused_at_call_time(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    gateway = FakeGateway("unused-token")
    gateway.start()
    try:
        # Saved while allowed (or a name that resolved to a public address then)...
        by_name = gateway.url.replace("127.0.0.1", "localhost")
        by_literal = gateway.url.replace("127.0.0.1", "[::ffff:127.0.0.1]")
        await save_workflow(_gateway_workflow(by_name, "workflow_by_name"))
        await save_workflow(_gateway_workflow(by_literal, "workflow_by_literal"))
        assert await Workflow.count() == 3
        executions = {
            name: await start(client, api_key, csv_data=rows(1), workflow_id=f"workflow_{name}")
            for name in ("by_name", "by_literal")
        }
        await run_worker()
        for execution_id in executions.values():
            approved = await client.post(
                f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key)
            )
            assert approved.status_code == 200
        # ... and sent when private addresses are no longer allowed.
        await run_worker(settings=strict_settings())
    finally:
        gateway.stop()

    assert gateway.requests == []
    errors = {}
    for name, execution_id in executions.items():
        body = (
            await client.get(f"{PUBLIC}/executions/{execution_id}/results", headers=auth(api_key))
        ).json()
        (result,) = body["output"]["results"]
        assert result["status"] == "failed"
        errors[name] = result["error"]
    assert errors["by_literal"] == (
        "could not reach the gateway (refused: ::ffff:127.0.0.1 is a private or loopback address)"
    )
    assert errors["by_name"].startswith(
        "could not reach the gateway (refused: localhost resolves to a private or loopback "
        "address ("
    )
