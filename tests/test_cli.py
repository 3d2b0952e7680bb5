"""The `flowgate` command, run as a real subprocess against the test database."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from arq.connections import ArqRedis

from tests.factories import PASSWORD, execute, sign_in
from web.domain import users
from web.domain.actors import Actor
from web.domain.api_keys import hash_key
from web.domain.errors import TooManyRequests, Unauthorized
from web.domain.tables import ApiKey


def flowgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web.cli", *args], capture_output=True, text=True, check=False
    )


async def test_keys_create_prints_the_key_once_and_stores_only_its_hash() -> None:
    result = flowgate(
        "keys", "create", "--name", "Acme site", "--monthly-limit", "50",
        "--expires-at", "2030-01-01T00:00:00Z",
        "--workflow", "workflow_bfsi_marketing_template",
        "--webhook-url", "https://acme.example/hooks",
        "--webhook-event", "execution.completed",
        "--webhook-secret", "s3cret", "--json",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert len(created["key"]) == 64 and set(created["key"]) <= set("0123456789abcdef")
    assert created["prefix"] == created["key"][:8]
    assert created["name"] == "Acme site"
    stored = await ApiKey.select().first()
    assert stored is not None
    assert str(stored["id"]) == created["id"]
    assert stored["key_hash"] == hash_key(created["key"])
    assert created["key"] not in json.dumps({k: str(v) for k, v in stored.items()})
    assert stored["prefix"] == created["key"][:8]
    assert stored["monthly_limit"] == 50
    assert stored["expires_at"].isoformat() == "2030-01-01T00:00:00+00:00"
    assert stored["allowed_workflows"] == ["workflow_bfsi_marketing_template"]
    assert stored["webhook_url"] == "https://acme.example/hooks"
    assert stored["webhook_events"] == ["execution.completed"]


async def test_keys_create_without_json_prints_the_key_on_its_own_line() -> None:
    result = flowgate("keys", "create", "--name", "plain")
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip().splitlines()[-1]
    stored = await ApiKey.select(ApiKey.key_hash).first()
    assert stored is not None and stored["key_hash"] == hash_key(secret)


async def test_keys_create_refuses_bad_input_with_a_clear_message() -> None:
    unknown_workflow = flowgate("keys", "create", "--name", "x", "--workflow", "nope")
    assert unknown_workflow.returncode == 1
    assert unknown_workflow.stderr.strip() == "error: Unknown workflow 'nope'"
    bad_date = flowgate("keys", "create", "--name", "x", "--expires-at", "tomorrow")
    assert bad_date.returncode == 2
    assert "not an ISO 8601 date-time" in bad_date.stderr
    assert await ApiKey.count() == 0


async def test_keys_list_shows_keys_without_secrets() -> None:
    created = json.loads(flowgate("keys", "create", "--name", "listed", "--json").stdout)

    listed = flowgate("keys", "list", "--json")

    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["id"] == created["id"]
    assert row["name"] == "listed"
    assert row["prefix"] == created["prefix"]
    assert row["active"] is True
    assert "key_hash" not in row and "webhook_secret" not in row
    assert created["key"] not in listed.stdout
    text = flowgate("keys", "list")
    assert created["id"] in text.stdout and created["key"] not in text.stdout


async def test_a_revoked_key_is_refused_by_the_api(client: httpx.AsyncClient) -> None:
    created = json.loads(flowgate("keys", "create", "--name", "doomed", "--json").stdout)
    assert (await execute(client, created["key"])).status_code == 202

    revoked = flowgate("keys", "revoke", created["id"])

    assert revoked.returncode == 0, revoked.stderr
    response = await execute(client, created["key"])
    assert response.status_code == 403
    assert response.json() == {
        "message": "API key is inactive",
        "error": "Forbidden",
        "statusCode": 403,
    }


def test_revoking_an_unknown_key_fails_clearly() -> None:
    result = flowgate("keys", "revoke", "00000000-0000-0000-0000-000000000000")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: API key not found"


async def test_keys_create_refuses_a_limit_past_the_column_size() -> None:
    result = flowgate("keys", "create", "--name", "huge", "--monthly-limit", str(2**31))
    assert result.returncode == 1
    assert result.stderr.strip() == "error: Monthly limit must be at most 2147483647"
    assert await ApiKey.count() == 0


# --- issue 11: one status rule, no key born expired ------------------------------------------


async def test_keys_list_shows_an_expired_key_as_expired() -> None:
    from datetime import UTC, datetime, timedelta

    from tests.factories import create_key

    expired = await create_key("old", expires_at=datetime.now(UTC) - timedelta(days=1))
    live = await create_key("live")

    text = flowgate("keys", "list")
    assert text.returncode == 0, text.stderr
    lines = {line.split()[0]: line for line in text.stdout.splitlines()}
    assert "  expired " in lines[str(expired.id)]
    assert "  active " in lines[str(live.id)]
    listed = {row["id"]: row for row in json.loads(flowgate("keys", "list", "--json").stdout)}
    assert listed[str(expired.id)]["status"] == "expired"
    assert listed[str(live.id)]["status"] == "active"


async def test_keys_create_refuses_an_expiry_in_the_past() -> None:
    result = flowgate("keys", "create", "--name", "late", "--expires-at", "2020-01-01T00:00:00Z")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: Expiry must be in the future"
    assert await ApiKey.count() == 0


# --- users (moved from tests/dashboard/test_auth.py: they test the CLI) -----------------------


def test_users_create_reads_the_password_from_stdin() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "web.cli", "users", "create", "--email", "Eve@Example.com",
         "--role", "admin", "--password-stdin"],
        input=PASSWORD + "\n", capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Created admin eve@example.com")
    assert PASSWORD not in result.stdout

    generated = subprocess.run(
        [sys.executable, "-m", "web.cli", "users", "create", "--email", "rev@example.com",
         "--role", "reviewer"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    assert "Password (shown once): " in generated.stdout

    duplicate = subprocess.run(
        [sys.executable, "-m", "web.cli", "users", "create", "--email", "eve@example.com",
         "--role", "admin"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert duplicate.returncode == 1
    assert duplicate.stderr.strip() == "error: A user with the email eve@example.com already exists"


async def test_signing_in_with_a_password_set_on_the_command_line(
    client: httpx.AsyncClient,
) -> None:
    subprocess.run(
        [sys.executable, "-m", "web.cli", "users", "create", "--email", "cli@example.com",
         "--role", "reviewer", "--password-stdin"],
        input=PASSWORD + "\n", capture_output=True, text=True, check=True,
    )  # fmt: skip
    await sign_in(client, "cli@example.com")
    assert (await client.get("/dashboard/approvals")).status_code == 200


async def test_users_set_password_sets_a_new_one_and_unlocks_a_locked_account(
    client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    await users.create_user("locked@example.com", PASSWORD, "reviewer", actor=Actor.system())
    for _ in range(users.LOCKOUT_FAILURES):
        with pytest.raises(Unauthorized):
            await users.sign_in(redis, "locked@example.com", "wrong password")
    with pytest.raises(TooManyRequests):
        await users.sign_in(redis, "locked@example.com", PASSWORD)

    new_password = "a brand new password"
    result = subprocess.run(
        [sys.executable, "-m", "web.cli", "users", "set-password", "--email", "Locked@Example.com",
         "--password-stdin"],
        input=new_password + "\n", capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "locked@example.com" in result.stdout and new_password not in result.stdout
    await sign_in(client, "locked@example.com", new_password)  # unlocked, with the new one
    with pytest.raises(Unauthorized):
        await users.sign_in(redis, "locked@example.com", PASSWORD)


async def test_users_set_password_without_stdin_prints_a_generated_one_once(
    client: httpx.AsyncClient,
) -> None:
    await users.create_user("gen@example.com", PASSWORD, "admin", actor=Actor.system())
    result = flowgate("users", "set-password", "--email", "gen@example.com")
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "shown once" in line]
    password = line.split(": ", 1)[1]
    await sign_in(client, "gen@example.com", password)

    unknown = flowgate("users", "set-password", "--email", "nobody@example.com")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "error: No user with the email nobody@example.com"
    short = subprocess.run(
        [sys.executable, "-m", "web.cli", "users", "set-password", "--email", "gen@example.com",
         "--password-stdin"],
        input="short\n", capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert short.returncode == 1
    assert short.stderr.strip() == "error: The password must be at least 10 characters long"
