"""The workflows pages: list with counts, activate / deactivate, steps and settings."""

from __future__ import annotations

import copy
from typing import Any

import httpx

from tests.factories import execute, post_form, start
from web.domain.tables import Workflow
from web.domain.workflows import BFSI_TEMPLATE, BFSI_WORKFLOW_ID, save_workflow

WORKFLOWS = "/dashboard/workflows"
BFSI = f"{WORKFLOWS}/{BFSI_WORKFLOW_ID}"
HTMX = {"HX-Request": "true"}


async def is_active(workflow_id: str = BFSI_WORKFLOW_ID) -> bool:
    row = await Workflow.select(Workflow.active).where(Workflow.id == workflow_id).first()
    assert row is not None
    return bool(row["active"])


def row_of(html: str, workflow_id: str) -> str:
    return html[html.index(f'<tr id="workflow-{workflow_id}"') :].split("</tr>")[0]


async def test_the_list_shows_each_workflow_with_its_state_and_execution_counts(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    other = copy.deepcopy(BFSI_TEMPLATE)
    other.update(id="workflow_other", name="Other campaign", active=False)
    await save_workflow(other)
    await start(client, api_key)
    await run_worker()  # now waiting for approval: still in progress
    await start(client, api_key)

    response = await admin_client.get(WORKFLOWS)

    assert response.status_code == 200
    assert "2 workflows" in response.text
    bfsi = row_of(response.text, BFSI_WORKFLOW_ID)
    assert 'class="badge badge-active">active</span>' in bfsi
    assert f'<a href="/dashboard/executions?workflow={BFSI_WORKFLOW_ID}">2</a>' in bfsi
    assert '<td class="num">2</td>' in bfsi  # both in progress
    assert '<td class="num">4</td>' in bfsi  # steps
    assert ">Deactivate</button>" in bfsi
    idle = row_of(response.text, "workflow_other")
    assert 'class="badge badge-inactive">inactive</span>' in idle
    assert '<a href="/dashboard/executions?workflow=workflow_other">0</a>' in idle
    assert ">Activate</button>" in idle


async def test_a_deactivated_workflow_refuses_executions_until_activated(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient, api_key: str
) -> None:
    response = await post_form(admin_client, f"{BFSI}/deactivate")

    assert response.status_code == 303
    assert response.headers["location"] == WORKFLOWS
    page = (await admin_client.get(WORKFLOWS)).text
    assert f"Workflow {BFSI_WORKFLOW_ID} is inactive: executing it answers 403" in page
    assert not await is_active()
    refused = await execute(client, api_key)
    assert refused.status_code == 403
    assert refused.json() == {
        "message": "Workflow is inactive",
        "error": "Forbidden",
        "statusCode": 403,
    }

    again = await post_form(admin_client, f"{BFSI}/activate", {"back": "detail"})

    assert again.status_code == 303
    assert again.headers["location"] == BFSI
    assert f"Workflow {BFSI_WORKFLOW_ID} is active" in (await admin_client.get(BFSI)).text
    assert (await execute(client, api_key)).status_code == 202


async def test_the_htmx_toggle_swaps_only_that_row(admin_client: httpx.AsyncClient) -> None:
    page = (await admin_client.get(WORKFLOWS)).text
    assert f'hx-post="{BFSI}/deactivate" hx-target="closest tr" hx-swap="outerHTML"' in page
    assert 'hx-confirm="Deactivate BFSI' in page

    off = await post_form(admin_client, f"{BFSI}/deactivate", headers=HTMX)

    assert off.status_code == 200
    assert off.text.startswith(f'<tr id="workflow-{BFSI_WORKFLOW_ID}" class="inactive">')
    assert off.text.count("<tr") == 1
    assert 'class="badge badge-inactive">inactive</span>' in off.text
    assert f'hx-post="{BFSI}/activate"' in off.text
    assert not await is_active()

    on = await post_form(admin_client, f"{BFSI}/activate", headers=HTMX)

    assert on.text.startswith(f'<tr id="workflow-{BFSI_WORKFLOW_ID}">')
    assert 'class="badge badge-active">active</span>' in on.text
    assert await is_active()
    # No flash is left behind for the next full page: the row showed the change.
    assert "is active" not in (await admin_client.get(WORKFLOWS)).text


async def test_the_detail_page_shows_steps_settings_and_required_fields(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient, api_key: str
) -> None:
    await start(client, api_key)

    response = await admin_client.get(BFSI)

    assert response.status_code == 200
    html = response.text
    assert f"<h1>{BFSI_TEMPLATE['name']}</h1>" in html
    assert html.count('<li id="step-') == len(BFSI_TEMPLATE["steps"])
    for step in BFSI_TEMPLATE["steps"]:
        assert f"<strong>{step['name']}</strong> <code>{step['type']}</code>" in html
    assert "&#34;allowBulkApproval&#34;: true" in html  # settings as pretty JSON, escaped
    assert "&#34;displayFields&#34;: [" in html
    for field in BFSI_TEMPLATE["required_fields"]:
        assert f"<code>{field}</code>" in html
    assert f'<a href="/dashboard/executions?workflow={BFSI_WORKFLOW_ID}">1</a>' in html
    assert 'name="back" value="detail"' in html and ">Deactivate</button>" in html


async def test_an_unknown_workflow_is_a_404_page(admin_client: httpx.AsyncClient) -> None:
    page = await admin_client.get(f"{WORKFLOWS}/workflow_nope")
    action = await post_form(admin_client, f"{WORKFLOWS}/workflow_nope/deactivate")

    assert page.status_code == 404 and "Workflow not found" in page.text
    assert action.status_code == 404 and "Workflow not found" in action.text


async def test_reviewers_get_403_on_every_workflow_url(
    reviewer_client: httpx.AsyncClient,
) -> None:
    for url in (WORKFLOWS, BFSI):
        response = await reviewer_client.get(url)
        assert response.status_code == 403, url
        assert "This page is for admins only" in response.text
    for url in (f"{BFSI}/deactivate", f"{BFSI}/activate"):
        response = await post_form(reviewer_client, url)
        assert response.status_code == 403, url
    htmx = await post_form(reviewer_client, f"{BFSI}/deactivate", headers=HTMX)
    assert htmx.status_code == 403 and htmx.headers["HX-Retarget"] == "#flash"
    assert await is_active()


async def test_toggles_need_the_csrf_token(admin_client: httpx.AsyncClient) -> None:
    response = await admin_client.post(f"{BFSI}/deactivate")

    assert response.status_code == 403
    assert "Your form expired or came from elsewhere" in response.text
    assert await is_active()
