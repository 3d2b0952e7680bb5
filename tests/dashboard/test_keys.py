"""The API keys pages: list, create (shown once), edit, revoke, rotate, the 30-day chart."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
from arq.connections import ArqRedis

from tests.factories import PUBLIC, auth, create_key, execute, post_form, start
from web.domain import clock
from web.domain.actors import Actor
from web.domain.api_keys import hash_key, revoke_key
from web.domain.tables import ApiKey
from web.domain.workflows import BFSI_TEMPLATE, BFSI_WORKFLOW_ID, save_workflow
from web.settings import get_settings

KEYS = "/dashboard/keys"
SCRIPT = "<script>alert(1)</script>"


def key_form(**overrides: Any) -> dict[str, Any]:
    """What the create form sends by default: the four events ticked, a secret wanted."""
    form: dict[str, Any] = {
        "name": "Acme site",
        "monthly_limit": "1000",
        "rate_limit_burst": "",
        "rate_limit_refill_per_second": "",
        "expires_at": "",
        "webhook_url": "",
        "webhook_events": [
            "execution.started",
            "execution.completed",
            "execution.failed",
            "execution.pending_approval",
        ],
        "generate_secret": "on",
    }
    form.update(overrides)
    return form


def shown(html: str, element_id: str) -> str:
    found = re.search(rf'<code id="{element_id}">([^<]+)</code>', html)
    assert found, f"no #{element_id} in the page"
    return found.group(1)


async def stored(key_id: UUID | str) -> dict[str, Any]:
    row = await ApiKey.select().where(ApiKey.id == UUID(str(key_id))).first()
    assert row is not None
    result: dict[str, Any] = row
    return result


async def follow(admin: httpx.AsyncClient, response: httpx.Response) -> httpx.Response:
    """The page a POST redirects to (post/redirect/get): a new secret is shown there, once."""
    assert response.status_code == 303, response.text
    return await admin.get(response.headers["location"])


async def created_key(admin: httpx.AsyncClient, **overrides: Any) -> tuple[UUID, str, str]:
    """Create a key through the form: (id, key, page)."""
    response = await follow(admin, await post_form(admin, f"{KEYS}/new", key_form(**overrides)))
    assert response.status_code == 200, response.text
    key_id = re.search(r'href="/dashboard/keys/([0-9a-f-]{36})"', response.text)
    assert key_id
    return UUID(key_id.group(1)), shown(response.text, "new-key"), response.text


async def test_an_empty_list_says_what_to_do(admin_client: httpx.AsyncClient) -> None:
    response = await admin_client.get(KEYS)

    assert response.status_code == 200
    assert "No API keys yet." in response.text
    assert 'href="/dashboard/keys/new">Create the first key</a>' in response.text


async def test_the_list_shows_status_expiry_usage_and_last_use(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    busy = await create_key(name="Busy", monthly_limit=2)
    await start(client, busy.secret)
    await start(client, busy.secret)
    revoked = await create_key(name="Gone")
    await revoke_key(redis, revoked.id, actor=Actor.system())
    expired = await create_key(name="Old", expires_at=datetime(2020, 1, 1, tzinfo=UTC))

    html = (await admin_client.get(KEYS)).text

    busy_row = html[html.index(f'<tr id="key-{busy.id}">') :].split("</tr>")[0]
    assert f"<code>{busy.prefix}…</code>" in busy_row
    assert 'class="badge badge-active">active</span>' in busy_row
    assert "<strong>2</strong> / 2 this month" in busy_row
    assert 'class="bar full"' in busy_row and '<rect width="100.0"' in busy_row
    assert "<time datetime=" in busy_row  # last used
    gone_row = html[html.index(f'<tr id="key-{revoked.id}">') :].split("</tr>")[0]
    assert 'class="badge badge-revoked">revoked</span>' in gone_row
    assert "<strong>0</strong> / 1000 this month" in gone_row
    assert 'class="bar"' in gone_row and '<rect width="0.0"' in gone_row
    old_row = html[html.index(f'<tr id="key-{expired.id}">') :].split("</tr>")[0]
    assert 'class="badge badge-expired">expired</span>' in old_row
    assert '<time datetime="2020-01-01T00:00:00.000Z">' in old_row


async def test_a_new_key_is_shown_once_and_works_against_the_public_api(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient
) -> None:
    form = await admin_client.get(f"{KEYS}/new")
    assert form.status_code == 200
    assert 'name="generate_secret" checked' in form.text
    # The spec's four events and execution.cancelled (added beside it), all on by default;
    # execution.delivery_updated offered, off by default.
    assert form.text.count('name="webhook_events" value=') == 6
    assert form.text.count("checked> <code>execution.") == 5

    response = await follow(
        admin_client,
        await post_form(
            admin_client,
            f"{KEYS}/new",
            key_form(webhook_url="https://hooks.example.com/flowgate", monthly_limit="50"),
        ),
    )

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "<strong>Shown once.</strong>" in response.text
    secret = shown(response.text, "new-key")
    webhook_secret = shown(response.text, "new-webhook-secret")
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert webhook_secret.startswith("whsec_") and len(webhook_secret) > 40
    assert '<button type="button" data-copy="new-key">Copy</button>' in response.text
    assert '<button type="button" data-copy="new-webhook-secret">Copy</button>' in response.text
    row = await ApiKey.select().where(ApiKey.key_hash == hash_key(secret)).first()
    assert row is not None
    assert row["name"] == "Acme site" and row["monthly_limit"] == 50
    assert row["webhook_url"] == "https://hooks.example.com/flowgate"
    assert row["webhook_secret"] == webhook_secret
    assert row["rate_limit_burst"] is None and row["rate_limit_refill_per_second"] is None
    assert row["allowed_workflows"] == [] and len(row["webhook_events"]) == 4

    assert (await execute(client, secret)).status_code == 202
    for url in (KEYS, f"{KEYS}/{row['id']}", f"{KEYS}/{row['id']}/edit"):
        page = await admin_client.get(url)
        assert page.status_code == 200
        assert secret not in page.text and webhook_secret not in page.text
        assert row["prefix"] in page.text
    settings = get_settings()
    defaults = (
        f"burst {settings.rate_limit_burst} (default) · "
        f"refill {settings.rate_limit_refill_per_second:g}/s (default)"
    )
    assert defaults in (await admin_client.get(f"{KEYS}/{row['id']}")).text


async def test_no_webhook_secret_without_a_url_or_when_unticked(
    admin_client: httpx.AsyncClient,
) -> None:
    no_url_id, _, no_url = await created_key(admin_client, name="No URL")
    unticked_id, _, unticked = await created_key(
        admin_client, name="Unticked", webhook_url="https://hooks.example.com/", generate_secret=""
    )

    for html in (no_url, unticked):
        assert 'id="new-webhook-secret"' not in html
    assert (await stored(no_url_id))["webhook_secret"] is None
    assert (await stored(unticked_id))["webhook_secret"] is None


async def test_create_problems_re_render_the_form_with_the_message(
    admin_client: httpx.AsyncClient,
) -> None:
    cases = [
        ({"webhook_url": "ftp://example.com/"}, "Webhook URL must be an http:// or https:// URL"),
        ({"monthly_limit": "lots"}, "Monthly limit must be a whole number"),
        ({"monthly_limit": "-1"}, "Monthly limit must be zero or more"),
        ({"rate_limit_burst": "0"}, "Burst must be at least 1"),
        ({"rate_limit_refill_per_second": "nan"}, "Refill rate must be a number"),
        ({"expires_at": "soon"}, "Expiry must be a date and time like 2026-01-01T00:00"),
        ({"name": "  "}, "Name must be between 1 and 200 characters"),
        ({"allowed_workflows": "workflow_nope"}, "Unknown workflow &#39;workflow_nope&#39;"),
    ]
    for overrides, message in cases:
        response = await post_form(
            admin_client, f"{KEYS}/new", key_form(**{"name": "Kept name", **overrides})
        )
        assert response.status_code == 400, overrides
        assert f'<div class="flash error" role="alert">{message}' in response.text
        assert 'id="key-form"' in response.text
        if "name" not in overrides:
            assert 'value="Kept name"' in response.text
    assert await ApiKey.count() == 0


async def test_editing_limits_changes_what_the_public_api_allows(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient
) -> None:
    key_id, secret, _ = await created_key(admin_client)
    edit = await admin_client.get(f"{KEYS}/{key_id}/edit")
    assert edit.status_code == 200 and 'value="Acme site"' in edit.text

    response = await post_form(
        admin_client,
        f"{KEYS}/{key_id}/edit",
        key_form(
            name="Acme (limited)",
            monthly_limit="1",
            rate_limit_burst="2",
            rate_limit_refill_per_second="0.01",
            webhook_secret="keep",
        ),
    )

    assert response.status_code == 303
    assert response.headers["location"] == f"{KEYS}/{key_id}"
    detail = (await admin_client.get(response.headers["location"])).text
    assert '<div class="flash success" role="status">API key saved</div>' in detail
    assert "<h1>Acme (limited)</h1>" in detail
    assert "burst 2 · refill 0.01/s" in detail
    first = await execute(client, secret)
    assert first.status_code == 202
    assert first.headers["x-ratelimit-limit"] == "2"
    second = await execute(client, secret)
    assert second.status_code == 403
    assert second.json()["message"] == "API key usage limit exceeded"
    third = await client.get(
        f"{PUBLIC}/executions/{first.json()['executionId']}/status", headers=auth(secret)
    )
    assert third.status_code == 429  # the bucket of 2 is empty, refilled once every 100 s


async def test_editing_scope_and_expiry_changes_what_the_public_api_allows(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient
) -> None:
    other = copy.deepcopy(BFSI_TEMPLATE)
    other.update(id="workflow_other", name="Other")
    await save_workflow(other)
    key_id, secret, _ = await created_key(admin_client)
    edit_url = f"{KEYS}/{key_id}/edit"

    scoped = await post_form(admin_client, edit_url, key_form(allowed_workflows="workflow_other"))
    assert scoped.status_code == 303
    refused = await execute(client, secret)
    assert refused.status_code == 403
    assert refused.json()["message"] == "Workflow is not allowed for this API key"
    assert (await execute(client, secret, workflow_id="workflow_other")).status_code == 202
    form = (await admin_client.get(edit_url)).text
    assert 'value="workflow_other" checked' in form
    assert f'value="{BFSI_WORKFLOW_ID}" >' in form

    # An expiry in the past is refused (test_an_expiry_in_the_past_is_refused_next_to_its_field):
    # one an hour ahead, then the clock passes it.
    soon = (clock.now() + timedelta(hours=1)).astimezone(UTC).replace(second=0, microsecond=0)
    expiring = await post_form(
        admin_client, edit_url, key_form(expires_at=f"{soon:%Y-%m-%dT%H:%M}")
    )
    assert expiring.status_code == 303
    assert (await stored(key_id))["expires_at"] == soon
    assert f'value="{soon:%Y-%m-%dT%H:%M}"' in (await admin_client.get(edit_url)).text
    clock.shift(timedelta(hours=2))
    answer = await execute(client, secret)
    assert answer.status_code == 403
    assert answer.json()["message"] == "API key has expired"


async def test_the_webhook_secret_is_kept_replaced_shown_once_or_removed(
    admin_client: httpx.AsyncClient,
) -> None:
    key_id, _, page = await created_key(admin_client, webhook_url="https://hooks.example.com/")
    first = shown(page, "new-webhook-secret")
    edit_url = f"{KEYS}/{key_id}/edit"
    url = {"webhook_url": "https://hooks.example.com/"}

    kept = await post_form(admin_client, edit_url, key_form(webhook_secret="keep", **url))
    assert kept.status_code == 303
    assert (await stored(key_id))["webhook_secret"] == first

    replaced = await follow(
        admin_client,
        await post_form(admin_client, edit_url, key_form(webhook_secret="generate", **url)),
    )
    assert replaced.status_code == 200
    assert replaced.headers["cache-control"] == "no-store"
    second = shown(replaced.text, "new-webhook-secret")
    assert second.startswith("whsec_") and second != first
    assert 'id="new-key"' not in replaced.text  # the API key itself is unchanged
    assert (await stored(key_id))["webhook_secret"] == second
    edit = (await admin_client.get(edit_url)).text
    assert second not in edit and "one is set" in edit

    removed = await post_form(admin_client, edit_url, key_form(webhook_secret="remove", **url))
    assert removed.status_code == 303
    assert (await stored(key_id))["webhook_secret"] is None
    assert "none set" in (await admin_client.get(edit_url)).text


async def test_edit_problems_re_render_the_form_and_change_nothing(
    admin_client: httpx.AsyncClient,
) -> None:
    key_id, _, _ = await created_key(admin_client)

    bad_url = await post_form(
        admin_client, f"{KEYS}/{key_id}/edit", key_form(name="Renamed", webhook_url="nope")
    )
    bad_choice = await post_form(
        admin_client, f"{KEYS}/{key_id}/edit", key_form(webhook_secret="print it")
    )

    assert bad_url.status_code == 400
    assert "Webhook URL must be an http:// or https:// URL with a host" in bad_url.text
    assert 'value="Renamed"' in bad_url.text and 'value="nope"' in bad_url.text
    assert bad_choice.status_code == 400
    assert "Choose to keep, replace or remove the webhook secret" in bad_choice.text
    assert (await stored(key_id))["name"] == "Acme site"


async def test_a_revoked_key_is_refused_by_the_public_api(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient
) -> None:
    key_id, secret, _ = await created_key(admin_client)
    detail = (await admin_client.get(f"{KEYS}/{key_id}")).text
    assert f'action="/dashboard/keys/{key_id}/revoke" data-confirm="Revoke Acme site' in detail

    response = await post_form(admin_client, f"{KEYS}/{key_id}/revoke")

    assert response.status_code == 303
    assert response.headers["location"] == f"{KEYS}/{key_id}"
    after = (await admin_client.get(response.headers["location"])).text
    assert "API key revoked" in after
    assert 'class="badge badge-revoked">revoked</span>' in after
    assert 'id="rotate"' not in after and 'id="revoke"' not in after
    answer = await execute(client, secret)
    assert answer.status_code == 403
    assert answer.json() == {
        "message": "API key is inactive",
        "error": "Forbidden",
        "statusCode": 403,
    }


async def test_rotation_keeps_the_old_key_working_until_the_grace_period_ends(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient
) -> None:
    key_id, old, _ = await created_key(admin_client)
    assert 'name="grace_hours" value="24"' in (await admin_client.get(f"{KEYS}/{key_id}")).text

    response = await follow(
        admin_client,
        await post_form(admin_client, f"{KEYS}/{key_id}/rotate", {"grace_hours": "2"}),
    )

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    new = shown(response.text, "new-key")
    assert new != old and "The old key keeps working until" in response.text
    row = await stored(key_id)
    assert row["key_hash"] == hash_key(new) and row["prefix"] == new[:8]
    assert row["previous_key_hash"] == hash_key(old)
    assert new not in (await admin_client.get(KEYS)).text
    assert "old key works until" in (await admin_client.get(KEYS)).text
    assert (await execute(client, new)).status_code == 202
    assert (await execute(client, old)).status_code == 202

    clock.shift(timedelta(hours=1, minutes=59))
    assert (await execute(client, old)).status_code == 202
    clock.shift(timedelta(minutes=2))

    gone = await execute(client, old)
    assert gone.status_code == 401
    assert gone.json()["message"] == "Invalid API key"
    assert (await execute(client, new)).status_code == 202
    assert "old key works until" not in (await admin_client.get(KEYS)).text


async def rotated(admin: httpx.AsyncClient, key_id: UUID) -> httpx.Response:
    return await follow(
        admin, await post_form(admin, f"{KEYS}/{key_id}/rotate", {"grace_hours": "2"})
    )


async def test_rotating_again_within_the_grace_period_warns_and_ends_the_first_old_key(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient
) -> None:
    key_id, first, _ = await created_key(admin_client)
    assert 'id="rotate-ends-old"' not in (await admin_client.get(f"{KEYS}/{key_id}")).text
    second = shown(
        (await rotated(admin_client, key_id)).text,
        "new-key",
    )

    page = (await admin_client.get(f"{KEYS}/{key_id}")).text
    assert 'id="rotate-ends-old"' in page
    assert "The key replaced by the last rotation stops working now." in page
    third = shown(
        (await rotated(admin_client, key_id)).text,
        "new-key",
    )

    assert (await execute(client, first)).status_code == 401  # as the warning said
    assert (await execute(client, second)).status_code == 202  # in its own grace period
    assert (await execute(client, third)).status_code == 202


async def test_rotation_defaults_to_24_hours_and_refuses_bad_periods_and_revoked_keys(
    admin_client: httpx.AsyncClient,
) -> None:
    key_id, _, _ = await created_key(admin_client)
    url = f"{KEYS}/{key_id}/rotate"

    default = await follow(admin_client, await post_form(admin_client, url, {"grace_hours": ""}))
    assert default.status_code == 200
    until = (await stored(key_id))["previous_key_expires_at"]
    assert abs(until - clock.now() - timedelta(hours=24)) < timedelta(minutes=1)

    too_long = await post_form(admin_client, url, {"grace_hours": "1000"})
    assert too_long.status_code == 303
    assert too_long.headers["location"] == f"{KEYS}/{key_id}#rotate"
    page = (await admin_client.get(f"{KEYS}/{key_id}")).text
    assert (
        '<div class="flash error" role="status">Grace period must be between 0 and 720 hours'
        in page
    )

    await post_form(admin_client, f"{KEYS}/{key_id}/revoke")
    refused = await post_form(admin_client, url, {"grace_hours": "1"})
    assert refused.status_code == 303
    assert (
        "A revoked API key cannot be rotated" in (await admin_client.get(f"{KEYS}/{key_id}")).text
    )
    assert (await stored(key_id))["previous_key_expires_at"] == until


async def test_the_key_page_charts_30_days_of_executions(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient
) -> None:
    key = await create_key(name="Charted")
    other = await create_key(name="Other")
    today = clock.now().date()
    await start(client, key.secret)
    await start(client, key.secret)
    await start(client, other.secret)  # another key's: not counted
    clock.shift(timedelta(days=-3))
    await start(client, key.secret)
    clock.shift(timedelta(days=-30))
    await start(client, key.secret)  # 33 days ago: outside the chart
    clock.reset()

    response = await admin_client.get(f"{KEYS}/{key.id}")

    assert response.status_code == 200
    html = response.text
    assert html.count('<g class="day">') == 30
    titles = re.findall(r"<title>(\d{4}-\d\d-\d\d): (\d+) executions?</title>", html)
    assert len(titles) == 30
    counts = {day: int(count) for day, count in titles}
    assert counts[today.isoformat()] == 2
    assert counts[(today - timedelta(days=3)).isoformat()] == 1
    assert (today - timedelta(days=29)).isoformat() in counts
    assert sum(counts.values()) == 3
    assert f"<title>{today.isoformat()}: 2 executions</title>" in html
    assert f"<title>{(today - timedelta(days=3)).isoformat()}: 1 execution</title>" in html
    assert "over the last 30 days: 3 in all" in html
    assert today.strftime("%b %d") in html  # today's axis label
    this_month = 2 + ((today - timedelta(days=3)).month == today.month)
    assert f"<strong>{this_month}</strong> / 1000 this month" in html


async def test_an_unknown_key_is_a_404_page(admin_client: httpx.AsyncClient) -> None:
    for url in (f"{KEYS}/{UUID(int=0)}", f"{KEYS}/{UUID(int=0)}/edit"):
        response = await admin_client.get(url)
        assert response.status_code == 404
        assert "API key not found" in response.text
    revoke = await post_form(admin_client, f"{KEYS}/{UUID(int=0)}/revoke")
    assert revoke.status_code == 404


async def test_key_names_are_escaped(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient
) -> None:
    key_id, _, created = await created_key(admin_client, name=SCRIPT)
    pages = [created]
    for url in (KEYS, f"{KEYS}/{key_id}", f"{KEYS}/{key_id}/edit"):
        pages.append((await admin_client.get(url)).text)

    for html in pages:
        assert SCRIPT not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_reviewers_get_403_on_every_key_url(
    admin_client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient
) -> None:
    key_id, secret, _ = await created_key(admin_client)
    gets = [KEYS, f"{KEYS}/new", f"{KEYS}/{key_id}", f"{KEYS}/{key_id}/edit"]
    posts = [
        (f"{KEYS}/new", key_form(name="Sneaky")),
        (f"{KEYS}/{key_id}/edit", key_form(name="Sneaky")),
        (f"{KEYS}/{key_id}/revoke", {}),
        (f"{KEYS}/{key_id}/rotate", {"grace_hours": "1"}),
    ]

    for url in gets:
        response = await reviewer_client.get(url)
        assert response.status_code == 403, url
        assert "This page is for admins only" in response.text
    for url, data in posts:
        response = await post_form(reviewer_client, url, data)
        assert response.status_code == 403, url
        assert "This page is for admins only" in response.text
    row = await stored(key_id)
    assert row["name"] == "Acme site" and row["active"] and row["key_hash"] == hash_key(secret)
    assert await ApiKey.count() == 1
    assert "API keys" not in (await reviewer_client.get("/dashboard/executions")).text


async def test_key_changes_need_the_csrf_token(admin_client: httpx.AsyncClient) -> None:
    key_id, _, _ = await created_key(admin_client)
    for url, data in [
        (f"{KEYS}/new", key_form(name="Forged")),
        (f"{KEYS}/{key_id}/edit", key_form(name="Forged")),
        (f"{KEYS}/{key_id}/revoke", {}),
        (f"{KEYS}/{key_id}/rotate", {}),
    ]:
        response = await admin_client.post(url, data=data)
        assert response.status_code == 403, url
        assert "Your form expired or came from elsewhere" in response.text
    row = await stored(key_id)
    assert row["name"] == "Acme site" and row["active"] and row["previous_key_hash"] is None
    assert await ApiKey.count() == 1


# --- issue 11: post/redirect/get, expiry in the past, revoked keys, errors by their field ----


async def test_reloading_the_show_once_page_neither_shows_the_key_again_nor_creates_another(
    admin_client: httpx.AsyncClient,
) -> None:
    response = await post_form(
        admin_client, f"{KEYS}/new", key_form(webhook_url="https://hooks.example.com/")
    )
    assert response.status_code == 303
    location = response.headers["location"]
    assert re.fullmatch(rf"{KEYS}/[0-9a-f-]{{36}}/created", location)  # no secret in the URL

    shown_once = await admin_client.get(location)
    assert shown_once.status_code == 200
    assert shown_once.headers["cache-control"] == "no-store"
    secret = shown(shown_once.text, "new-key")
    webhook_secret = shown(shown_once.text, "new-webhook-secret")
    assert await ApiKey.count() == 1

    reloaded = await admin_client.get(location)
    assert reloaded.status_code == 303
    assert reloaded.headers["location"] == location.removesuffix("/created")
    page = await admin_client.get(reloaded.headers["location"])
    assert secret not in page.text and webhook_secret not in page.text
    assert await ApiKey.count() == 1


async def test_a_rotated_key_and_a_new_webhook_secret_are_shown_once_after_a_redirect(
    admin_client: httpx.AsyncClient,
) -> None:
    key_id, _, _ = await created_key(admin_client, webhook_url="https://hooks.example.com/")
    for url, form, element in (
        (f"{KEYS}/{key_id}/rotate", {"grace_hours": "1"}, "new-key"),
        (
            f"{KEYS}/{key_id}/edit",
            key_form(webhook_url="https://hooks.example.com/", webhook_secret="generate"),
            "new-webhook-secret",
        ),
    ):
        response = await post_form(admin_client, url, form)
        assert response.status_code == 303, url
        first = await admin_client.get(response.headers["location"])
        secret = shown(first.text, element)
        again = await admin_client.get(response.headers["location"])
        assert again.status_code == 303 and secret not in again.text
    row = await stored(key_id)
    assert row["webhook_secret"] == secret


async def test_the_show_once_page_of_another_key_shows_nothing(
    admin_client: httpx.AsyncClient,
) -> None:
    first_id, _, _ = await created_key(admin_client, name="First")
    response = await post_form(admin_client, f"{KEYS}/new", key_form(name="Second"))
    other = await admin_client.get(f"{KEYS}/{first_id}/created")
    assert other.status_code == 303  # the entry was for the second key, and is gone now
    assert (await admin_client.get(response.headers["location"])).status_code == 303


async def test_an_expiry_in_the_past_is_refused_next_to_its_field(
    admin_client: httpx.AsyncClient,
) -> None:
    past = (clock.now() - timedelta(minutes=5)).astimezone(UTC)
    created = await post_form(
        admin_client, f"{KEYS}/new", key_form(expires_at=f"{past:%Y-%m-%dT%H:%M}")
    )
    assert created.status_code == 400
    field = re.search(r"<label>Expires.*?</label>", created.text, re.S)
    assert field
    assert "Expiry must be in the future" in field.group(0)
    assert 'aria-describedby="expires_at-error"' in field.group(0)
    assert await ApiKey.count() == 0

    key_id, _, _ = await created_key(admin_client)
    edited = await post_form(
        admin_client, f"{KEYS}/{key_id}/edit", key_form(expires_at="2020-01-01T00:00")
    )
    assert edited.status_code == 400
    assert "Expiry must be in the future" in edited.text
    assert (await stored(key_id))["expires_at"] is None


async def test_form_errors_sit_next_to_their_field_not_in_a_banner(
    admin_client: httpx.AsyncClient,
) -> None:
    cases = [
        ({"monthly_limit": "lots"}, "monthly_limit"),
        ({"rate_limit_burst": "0"}, "rate_limit_burst"),
        ({"rate_limit_refill_per_second": "nan"}, "rate_limit_refill_per_second"),
        ({"name": "  "}, "name"),
        ({"webhook_url": "ftp://example.com/"}, "webhook_url"),
        ({"allowed_workflows": "workflow_nope"}, "allowed_workflows"),
    ]
    for overrides, field in cases:
        response = await post_form(admin_client, f"{KEYS}/new", key_form(**overrides))
        assert response.status_code == 400, field
        html = response.text
        assert html.count('role="alert"') == 1, field
        error = html.index(f'<div class="field-error" id="{field}-error">')
        if field != "allowed_workflows":
            assert f'name="{field}"' in html[html.rindex("<label", 0, error) : error], field
        # Nothing between the CSRF input and the first fieldset: no banner at the top.
        top = html[html.index('id="key-form"') : html.index("<fieldset>")]
        assert 'class="flash' not in top, field


async def test_a_revoked_key_is_read_only(admin_client: httpx.AsyncClient) -> None:
    key_id, _, _ = await created_key(admin_client)
    await follow(admin_client, await post_form(admin_client, f"{KEYS}/{key_id}/rotate", {}))
    assert "the old key keeps working until" in (await admin_client.get(f"{KEYS}/{key_id}")).text
    await post_form(admin_client, f"{KEYS}/{key_id}/revoke")

    page = (await admin_client.get(f"{KEYS}/{key_id}")).text
    assert 'id="revoked-read-only"' in page and "it is read-only" in page
    assert "keeps working until" not in page
    assert f'href="{KEYS}/{key_id}/edit"' not in page
    assert f'action="{KEYS}/{key_id}/rotate"' not in page

    edit = await admin_client.get(f"{KEYS}/{key_id}/edit")
    assert edit.status_code == 303 and edit.headers["location"] == f"{KEYS}/{key_id}"
    before = await stored(key_id)
    saved = await post_form(admin_client, f"{KEYS}/{key_id}/edit", key_form(name="Revived"))
    assert saved.status_code == 303 and saved.headers["location"] == f"{KEYS}/{key_id}"
    assert "A revoked API key cannot be edited" in (await admin_client.get(f"{KEYS}/{key_id}")).text
    rotate = await post_form(admin_client, f"{KEYS}/{key_id}/rotate", {"grace_hours": "1"})
    assert rotate.status_code == 303
    assert (
        "A revoked API key cannot be rotated" in (await admin_client.get(f"{KEYS}/{key_id}")).text
    )
    assert await stored(key_id) == before
