"""The dashboard in a real browser: headless Chromium against the real server, with a real
worker. What the handler tests (tests/dashboard/) cannot see: HTMX swapping one row or badge
in place without a reload, the copy button and the clipboard, polling, and that escaped text
stays text once a browser parses it. One test also takes a README screenshot
(`FLOWGATE_UPDATE_SCREENSHOTS=1` saves them to docs/screenshots/)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from playwright.async_api import Dialog, Page, expect

from tests import factories
from tests.factories import PUBLIC, auth, execution_row, row_states, rows
from tests.live_server import LiveServer
from tests.receiver import Receiver
from web.domain import api_keys
from web.domain.tables import ApiKey, SandboxMessage

EDITED = (
    "Dear Arjun, our secured card helps you build your credit step by step. "
    "Visit your nearest Pune branch or reply YES to learn more. T&C apply. Reply STOP to opt out."
)


async def mark_page(page: Page) -> None:
    """Tag the document: a reload (or any navigation) loses the tag, an HTMX swap keeps it."""
    await page.evaluate("window.notReloaded = true")


async def assert_not_reloaded(page: Page, url: str) -> None:
    assert page.url == url
    assert await page.evaluate("window.notReloaded === true")


async def waiting_for_approval(
    api: httpx.AsyncClient, secret: str, run_worker: Any, csv_data: list[dict[str, Any]]
) -> str:
    execution_id = await factories.start(api, secret, csv_data=csv_data)
    await run_worker()
    assert (await execution_row(execution_id))["status"] == "pending_approval"
    return execution_id


async def test_a_reviewer_reviews_100_rows_and_sees_the_results_and_webhook_log(
    reviewer_page: Page,
    live_server: LiveServer,
    api: httpx.AsyncClient,
    run_worker: Any,
    receiver: Receiver,
) -> None:
    page = reviewer_page
    key = await factories.create_key(name="Acme Bank website", webhook_url=receiver.url)
    execution_id = await waiting_for_approval(api, key.secret, run_worker, rows(100))
    ids = [str(r["id"]) for r in await row_states(execution_id)]
    original = (await row_states(execution_id))[2]["generated_content"]

    await page.get_by_role("link", name="Approvals").click()
    await expect(page.get_by_role("heading", name="Waiting for approval")).to_be_visible()
    await page.get_by_role("link", name="Review").click()
    review_url = f"{live_server.url}/dashboard/approvals/{execution_id}"
    await expect(page).to_have_url(review_url)
    table_rows = page.locator("table.review tbody tr")
    await expect(table_rows).to_have_count(100)

    # Approve all first (a plain form post: it reloads the page); it decides every undecided
    # row, then the rejections and the edit change rows in place (HTMX).
    await page.get_by_role("button", name="Approve all undecided").click()
    await expect(page.locator("table.review td.decide .badge-approved")).to_have_count(100)
    await mark_page(page)
    await page.evaluate(f"document.getElementById('row-{ids[2]}').swapTag = 'old'")
    await page.evaluate(f"document.getElementById('row-{ids[50]}').swapTag = 'untouched'")

    for index in (1, 3):
        row = page.locator(f"#row-{ids[index]}")
        await row.get_by_role("button", name="Reject").click()
        await expect(row.locator("td.decide .badge")).to_have_text("rejected")
        await expect(row.get_by_role("button", name="Reject")).to_have_attribute(
            "aria-pressed", "true"
        )
        await expect(row).to_have_class(re.compile(r"\bdecision-rejected\b"))
        await expect(row.locator("td.decide")).to_contain_text("reviewer@example.com")
    await assert_not_reloaded(page, review_url)

    edited = page.locator(f"#row-{ids[2]}")
    await edited.get_by_role("link", name="Edit").click()
    textarea = edited.locator("textarea")
    await expect(textarea).to_have_value(original)
    await textarea.fill(EDITED)
    await edited.get_by_role("button", name="Save and re-check").click()
    await expect(edited.locator("td.message")).to_contain_text(EDITED)
    await expect(edited.locator("textarea")).to_have_count(0)
    await expect(edited.locator("td.message .diff h3").nth(1)).to_have_text(
        "Edited by reviewer@example.com"
    )
    await expect(edited.locator("td.compliance .badge").first).to_have_text("passed")
    await expect(edited.locator("td.decide .badge")).to_have_text("approved")
    await assert_not_reloaded(page, review_url)
    # Only the edited row was replaced: its element is new, row 51's is the same one.
    assert await page.evaluate(f"document.getElementById('row-{ids[2]}').swapTag") is None
    assert await page.evaluate(f"document.getElementById('row-{ids[50]}').swapTag") == "untouched"
    await expect(table_rows).to_have_count(100)
    await expect(page.locator("table.review td.decide .badge-approved")).to_have_count(98)

    # Saved as made: a reload shows the same decisions, and the summary counts them.
    await page.reload()
    summary = page.locator("section.summary")
    await expect(summary.locator(".outcome")).to_have_text(
        "98 will be sent, 0 skipped for compliance, 2 rejected"
    )
    await expect(summary.locator(".tab-undecided .count")).to_have_text("0")
    # The README's review.png is taken by tests/browser/test_review_screen.py (keys in use).

    await page.get_by_role("button", name="Submit…").click()
    await expect(page.get_by_role("heading", name="Send the approved messages?")).to_be_visible()
    await page.get_by_label("Comment").fill("Two rows off-brand; row 3 reworded.")
    await page.get_by_role("button", name="Send 98 messages").click()
    detail_url = f"{live_server.url}/dashboard/executions/{execution_id}"
    await expect(page).to_have_url(detail_url)
    await run_worker()
    # The status badge polls while the run is live and reloads the page when it changes.
    await expect(page.locator(f"#status-{execution_id} .badge")).to_have_text(
        "completed", timeout=10_000
    )

    await expect(page.get_by_role("heading", name="Results").locator("..")).to_contain_text(
        "98 sent · 0 failed"
    )
    results = page.locator("table.rows tbody td:nth-child(6) .badge")
    await expect(results).to_have_count(100)
    assert (await results.all_text_contents()).count("sent") == 98
    for index in (1, 3):
        result = page.locator(f"#row-{ids[index]} td:nth-child(6) .badge")
        await expect(result).to_have_text("rejected")
    await expect(page.locator(f"#row-{ids[2]} td.message")).to_contain_text(EDITED)
    await expect(page.locator(f"#row-{ids[2]} td:nth-child(6) .badge")).to_have_text("sent")
    approval = page.get_by_role("heading", name="Approval", exact=True).locator("..")
    await expect(approval).to_contain_text("reviewer@example.com")
    await expect(approval).to_contain_text("Two rows off-brand; row 3 reworded.")

    webhooks = page.locator("#webhooks tbody tr")
    await expect(webhooks).to_have_count(3)
    assert [
        t.strip() for t in await webhooks.locator("td:nth-child(2) code").all_text_contents()
    ] == [
        "execution.started",
        "execution.pending_approval",
        "execution.completed",
    ]
    await expect(webhooks.locator("td:nth-child(3) .badge-delivered")).to_have_count(3)
    for attempt in await webhooks.locator("ol.attempts li").all_text_contents():
        assert "HTTP 200" in attempt and receiver.url in attempt
    assert len(receiver.requests) == 3

    states = await row_states(execution_id)
    assert [r["decision"] for r in states].count("approved") == 98
    assert [i for i, r in enumerate(states) if r["decision"] == "rejected"] == [1, 3]
    assert [i for i, r in enumerate(states) if r["send_status"] == "rejected"] == [1, 3]
    assert {r["decided_by"] for r in states} == {"reviewer@example.com"}
    assert states[2]["generated_content"] == EDITED
    assert states[2]["original_content"] == original
    assert states[2]["edited_by"] == "reviewer@example.com"
    assert [r["original_content"] is None for r in states].count(False) == 1
    sent = await SandboxMessage.select(SandboxMessage.body).where(
        SandboxMessage.execution_row == UUID(ids[2])
    )
    assert sent == [{"body": EDITED}]
    assert await SandboxMessage.count() == 98
    stored = await execution_row(execution_id)
    assert (stored["status"], stored["approval_status"]) == ("completed", "approved")
    assert stored["approval_comment"] == "Two rows off-brand; row 3 reworded."


async def test_an_admin_creates_a_key_copies_it_and_uses_it_against_the_public_api(
    admin_page: Page, live_server: LiveServer, api: httpx.AsyncClient
) -> None:
    page = admin_page
    await page.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=live_server.url
    )
    await page.get_by_role("link", name="API keys").click()
    await expect(page.get_by_text("No API keys yet.")).to_be_visible()
    await page.get_by_role("link", name="New API key").click()

    form = page.locator("#key-form")
    await form.locator("input[name=name]").fill("Acme Bank website")
    await form.locator("input[name=monthly_limit]").fill("500")
    await form.locator("input[value=workflow_bfsi_marketing_template]").check()
    await form.get_by_role("button", name="Create key").click()

    await expect(page.get_by_role("heading", name="API key created")).to_be_visible()
    await expect(page.locator("#shown-once")).to_contain_text("Shown once.")
    shown = (await page.locator("#new-key").inner_text()).strip()
    copy = page.locator("button[data-copy=new-key]")
    await copy.click()
    await expect(copy).to_have_text("Copied")
    # The clipboard API works in this headless Chromium once the context has the permissions
    # (127.0.0.1 is a secure context); no fallback to the <code> element needed.
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied == shown
    assert re.fullmatch(r"[0-9a-f]{64}", copied)

    response = await api.post(
        f"{PUBLIC}/agents/workflow_bfsi_marketing_template/execute",
        json={"input": {"csvData": rows(2)}},
        headers=auth(copied),
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    stored = await ApiKey.select(
        ApiKey.name, ApiKey.monthly_limit, ApiKey.allowed_workflows, ApiKey.key_hash
    ).where(ApiKey.prefix == copied[:8])
    assert stored == [
        {
            "name": "Acme Bank website",
            "monthly_limit": 500,
            "allowed_workflows": ["workflow_bfsi_marketing_template"],
            "key_hash": api_keys.hash_key(copied),
        }
    ]

    await page.get_by_role("link", name="I have saved it").click()
    await expect(page.get_by_role("heading", name="Acme Bank website")).to_be_visible()
    await expect(page.locator(".usage")).to_contain_text("1 / 500 this month")
    assert copied not in await page.content()  # shown once, never again


async def test_markup_in_rows_and_key_names_shows_as_text_and_never_runs(
    reviewer_page: Page, api: httpx.AsyncClient, run_worker: Any
) -> None:
    page = reviewer_page
    dialogs: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    script = "<script>alert(1)</script>"
    data = rows(2)
    data[0]["name"] = script
    data[1]["city"] = "<img src=x onerror=alert(2)>"  # ends up in the generated message
    key = await factories.create_key(name="<script>alert(3)</script>")
    execution_id = await waiting_for_approval(api, key.secret, run_worker, data)
    ids = [str(r["id"]) for r in await row_states(execution_id)]

    await page.goto("/dashboard/approvals")
    await expect(page.locator("table.data tbody td:nth-child(3)")).to_have_text(
        "<script>alert(3)</script>"
    )
    await page.goto(f"/dashboard/approvals/{execution_id}")
    first = page.locator(f"#row-{ids[0]}")
    await expect(first.locator("td:nth-child(3)")).to_have_text(script)
    await expect(first.locator("td.message")).to_contain_text(f"Dear {script},")
    await expect(page.locator(f"#row-{ids[1]} td.message")).to_contain_text(
        "Visit your nearest <img src=x onerror=alert(2)> branch"
    )
    # HTMX re-renders the rows from the server (and would run a <script> in what it swaps in).
    await first.get_by_role("button", name="Reject").click()
    await expect(first.locator("td.decide .badge")).to_have_text("rejected")
    await expect(first.locator("td:nth-child(3)")).to_have_text(script)
    second = page.locator(f"#row-{ids[1]}")
    await second.get_by_role("link", name="Edit").click()
    await expect(second.locator("textarea")).to_have_value(re.compile("<img src=x onerror="))
    await second.get_by_role("button", name="Save and re-check").click()
    await expect(second.locator("textarea")).to_have_count(0)

    await expect(page.locator("main script, main img")).to_have_count(0)
    await page.wait_for_timeout(200)  # give a stray handler (an <img onerror>) time to fire
    assert dialogs == []


async def test_a_live_status_badge_changes_in_place_when_the_worker_moves_the_run_on(
    reviewer_page: Page,
    api: httpx.AsyncClient,
    run_worker: Any,
    screenshots: Path,
) -> None:
    page = reviewer_page
    # Some history around the live run, so the list (and its screenshot) looks like a day's work.
    acme = await factories.create_key(name="Acme Bank website")
    northwind = await factories.create_key(name="Northwind Credit app")
    done = await factories.start(api, acme.secret, csv_data=rows(40))
    refused = await factories.start(api, northwind.secret, csv_data=rows(12))
    await factories.start(api, acme.secret, csv_data=rows(25))
    await run_worker()
    for execution_id, action in ((done, "approve"), (refused, "reject")):
        answer = await api.post(
            f"{PUBLIC}/executions/{execution_id}/{action}",
            json={"comment": "checked"},
            headers=auth(acme.secret if execution_id == done else northwind.secret),
        )
        assert answer.status_code == 200, answer.text
    await run_worker()
    live = await factories.start(api, northwind.secret, csv_data=rows(100))

    await page.goto("/dashboard/executions")
    list_url = page.url
    badge = page.locator(f"#status-{live} .badge")
    await expect(badge).to_have_text("pending")
    await expect(page.locator(".status[hx-trigger]")).to_have_count(1)  # only live runs poll
    await mark_page(page)

    await run_worker()

    await expect(badge).to_have_text("pending approval", timeout=5_000)
    await expect(page.locator(".status[hx-trigger]")).to_have_count(0)  # polling stopped
    await assert_not_reloaded(page, list_url)
    statuses = await page.locator("#executions-table tbody td:nth-child(2)").all_text_contents()
    assert [s.strip() for s in statuses] == [
        "pending approval",
        "pending approval",
        "cancelled",
        "completed",
    ]
    await page.reload()  # the Approval column is not part of the polled badge
    await page.screenshot(path=screenshots / "executions.png")
    assert (screenshots / "executions.png").stat().st_size < 400_000
