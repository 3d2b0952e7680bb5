"""The executions pages: list, filters, live status, detail, redelivery, escaping."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest

from tests.factories import PUBLIC, auth, create_key, post_form, rows, start
from tests.receiver import Receiver
from web.domain import list_pages
from web.domain.executions import ExecutionListEntry
from web.domain.tables import Execution, WebhookAttempt, WebhookEvent


async def test_the_list_shows_executions_newest_first_with_their_key(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient, run_worker: Any
) -> None:
    acme = (await create_key(name="Acme site")).secret
    older = await start(client, acme, csv_data=rows(2))
    await run_worker()
    newer = await start(client, acme, csv_data=rows(5))

    page = await admin_client.get("/dashboard/executions")

    assert page.status_code == 200
    html = page.text
    assert html.index(newer) < html.index(older)
    assert "Acme site" in html
    assert 'class="badge badge-pending-approval">pending approval</span>' in html
    # The pending one polls for its status; the paused one does not.
    assert f'hx-get="/dashboard/executions/{newer}/status" hx-trigger="every 2s"' in html
    assert f'hx-get="/dashboard/executions/{older}/status' not in html


async def test_filters_narrow_the_list(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient, run_worker: Any
) -> None:
    first = await create_key(name="First")
    second = await create_key(name="Second")
    a = await start(client, first.secret)
    b = await start(client, second.secret)
    await run_worker()  # both pending approval
    c = await start(client, second.secret)

    by_key = (await admin_client.get(f"/dashboard/executions?api_key={first.id}")).text
    by_status = (await admin_client.get("/dashboard/executions?status=pending")).text
    by_date = (await admin_client.get("/dashboard/executions?created_to=2000-01-01")).text
    htmx = await admin_client.get(
        "/dashboard/executions?status=pending_approval",
        headers={"HX-Request": "true", "HX-Target": "executions-table"},
    )

    assert a in by_key and b not in by_key and c not in by_key
    assert c in by_status and a not in by_status and b not in by_status
    assert "No executions match." in by_date and "clear the filters" in by_date
    assert htmx.text.lstrip().startswith('<div id="executions-table">')
    assert a in htmx.text and b in htmx.text and c not in htmx.text


LINK = r'href="/dashboard/executions/([0-9a-f-]{36})"'


async def test_the_list_pages_by_older_and_newer_links_with_a_capped_count(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = (await create_key()).secret
    started = [await start(client, secret, csv_data=rows(1)) for _ in range(51)]

    first = (await admin_client.get("/dashboard/executions")).text
    older = re.search(r'<a rel="next" href="\?([^"]*)">Older →</a>', first)
    assert older and "Newer" not in first and "51 in all" in first
    second = (
        await admin_client.get("/dashboard/executions?" + older[1].replace("&amp;", "&"))
    ).text
    newer = re.search(r'<a rel="prev" href="\?([^"]*)">← Newer</a>', second)
    assert newer and "Older →" not in second
    back = (await admin_client.get("/dashboard/executions?" + newer[1].replace("&amp;", "&"))).text

    assert re.findall(LINK, first) == list(reversed(started))[:50]
    assert re.findall(LINK, second) == [started[0]]
    assert re.findall(LINK, back) == re.findall(LINK, first)
    # Past 10,000 matches the page stops counting (list_pages.COUNT_CAP, made small here).
    monkeypatch.setattr(list_pages, "COUNT_CAP", 50)
    capped = (await admin_client.get("/dashboard/executions")).text
    assert "50+ in all" in capped


async def test_the_status_badge_stops_polling_once_the_run_is_not_live(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await start(client, api_key)
    live = await reviewer_client.get(
        f"/dashboard/executions/{execution_id}/status?shown=pending",
        headers={"HX-Request": "true"},
    )
    assert 'hx-trigger="every 2s"' in live.text
    assert "HX-Refresh" not in live.headers

    await run_worker()
    paused = await reviewer_client.get(
        f"/dashboard/executions/{execution_id}/status?shown=pending",
        headers={"HX-Request": "true"},
    )

    assert paused.text.strip().startswith(f'<span id="status-{execution_id}" class="status">')
    assert "hx-trigger" not in paused.text
    assert "pending approval" in paused.text
    assert paused.headers["HX-Refresh"] == "true"  # the detail page reloads to show the rows


async def test_on_the_list_the_status_poll_also_updates_the_approval_cell(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await start(client, api_key)
    listed = (await reviewer_client.get("/dashboard/executions")).text
    assert f'<span id="approval-{execution_id}">' in listed

    await run_worker()
    polled = await reviewer_client.get(
        f"/dashboard/executions/{execution_id}/status", headers={"HX-Request": "true"}
    )

    oob = re.search(
        rf'<span id="approval-{execution_id}" hx-swap-oob="true">(.*?)</span>\s*$',
        polled.text,
        re.S,
    )
    assert oob is not None, polled.text
    assert "pending" in oob.group(1)
    assert "HX-Refresh" not in polled.headers


async def test_the_detail_page_shows_steps_rows_results_decision_and_webhooks(
    client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    run_worker: Any,
    receiver: Receiver,
) -> None:
    key = await create_key(name="Acme site", webhook_url=receiver.url)
    data = rows(2)
    data[1]["phone"] = "12345"
    execution_id = await start(client, key.secret, csv_data=data)
    await run_worker()
    await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve",
        json={"comment": "Fine by me"},
        headers=auth(key.secret),
    )
    await run_worker()

    html = (await admin_client.get(f"/dashboard/executions/{execution_id}")).text

    assert "Acme site" in html
    assert "Manual approval" in html and "Send WhatsApp message" in html
    assert "by <strong>api_key:Acme site</strong>" in html
    assert "<blockquote>Fine by me</blockquote>" in html
    assert "Dear John, as a valued customer" in html
    assert "phone is not an E.164 phone number: &#39;12345&#39;" in html
    assert (
        "<strong>1</strong> sent · <strong>0</strong> failed · <strong>1</strong> skipped" in html
    )
    assert re.search(r"<code>whatsapp_msg_[0-9a-f]{32}</code>", html)
    for event in ("execution.started", "execution.pending_approval", "execution.completed"):
        assert f"<code>{event}</code>" in html
    assert html.count("<strong>HTTP 200</strong>") == 3
    assert html.count(">Redeliver</button>") == 3


async def test_an_admin_redelivers_a_webhook_from_the_detail_page(
    client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    reviewer_client: httpx.AsyncClient,
    run_worker: Any,
    receiver: Receiver,
) -> None:
    key = await create_key(webhook_url=receiver.url, webhook_events=["execution.started"])
    execution_id = await start(client, key.secret)
    await run_worker()
    event = await WebhookEvent.select(WebhookEvent.id).first()
    assert event is not None
    url = f"/dashboard/executions/{execution_id}/webhooks/{event['id']}/redeliver"

    refused = await post_form(reviewer_client, url)
    assert refused.status_code == 403
    assert "This page is for admins only" in refused.text
    assert (
        "Redeliver</button>"
        not in (await reviewer_client.get(f"/dashboard/executions/{execution_id}")).text
    )

    swapped = await post_form(admin_client, url, headers={"HX-Request": "true"})
    assert swapped.status_code == 200
    assert swapped.text.startswith('<section id="webhooks" class="card">')
    assert "Queued for redelivery" in swapped.text
    await run_worker()
    assert len(await receiver.wait_for(2)) == 2
    assert await WebhookAttempt.count() == 2


async def test_user_supplied_text_is_escaped(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    script = "<script>alert(1)</script>"
    execution_id = await start(client, api_key, csv_data=rows(1, name=script), description=script)
    await run_worker()

    for url in (f"/dashboard/executions/{execution_id}", f"/dashboard/approvals/{execution_id}"):
        html = (await admin_client.get(url)).text
        assert script not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_an_unknown_execution_is_a_404_page(admin_client: httpx.AsyncClient) -> None:
    response = await admin_client.get(f"/dashboard/executions/{UUID(int=0)}")
    assert response.status_code == 404
    assert "<h1>404 · Not Found</h1>" in response.text
    assert "Execution not found" in response.text


async def test_a_bad_filter_is_a_400_page(admin_client: httpx.AsyncClient) -> None:
    response = await admin_client.get("/dashboard/executions?created_from=yesterday")
    assert response.status_code == 400
    assert "From must be a date like 2025-10-23" in response.text


async def test_dates_are_machine_readable_for_the_local_time_script(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient, api_key: str
) -> None:
    execution_id = await start(client, api_key)
    created = (await Execution.select(Execution.created_at).first() or {})["created_at"]
    html = (await admin_client.get(f"/dashboard/executions/{execution_id}")).text
    iso = (created - timedelta(microseconds=created.microsecond % 1000)).strftime(
        "%Y-%m-%dT%H:%M:%S.%f"
    )[:-3]
    assert f'<time datetime="{iso}Z">' in html


def test_pagination_links_url_encode_the_filters(app: Any) -> None:
    entry = ExecutionListEntry(
        id=UUID(int=7),
        workflow="w",
        key_name="k",
        status="completed",
        approval_status=None,
        row_count=1,
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
        completed_at=None,
    )
    filters = {
        "status": "a&b=c",
        "workflow": "two words",
        "api_key": "",
        "created_from": "2026-01-01",
        "created_to": "",
    }
    html = app.template_engine.get_template("executions/_table.html").render(
        rows=[entry], live=(), newer="1_aa", older="2_bb", filters=filters
    )

    query = "status=a%26b%3Dc&amp;workflow=two+words&amp;api_key=&amp;created_from=2026-01-01"
    assert f'href="?{query}&amp;created_to=&amp;newer=1_aa"' in html
    assert f'href="?{query}&amp;created_to=&amp;older=2_bb"' in html
