"""approverGroups decide who sees an execution on the dashboard, not only who decides it: a
reviewer outside the groups finds it nowhere (the executions list, its filters, counts and
pages, the live status, the detail page, the review screen's rows), a member and an admin see
it, and a workflow without groups is everyone's (real server, worker, PostgreSQL, Redis)."""

from __future__ import annotations

import copy
import re
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.factories import execution_row, row_states, rows, start
from web.dashboard import executions as executions_pages
from web.domain import users
from web.domain.actors import Actor
from web.domain.tables import User
from web.domain.workflows import BFSI_TEMPLATE, BFSI_WORKFLOW_ID, save_workflow

GROUPED = "workflow_compliance_only"
LINK = r'href="/dashboard/executions/([0-9a-f-]{36})"'


async def _grouped_workflow() -> None:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = GROUPED
    definition["name"] = "Compliance only"
    for step in definition["steps"]:
        if step["type"] == "approval":
            step["settings"]["approverGroups"] = ["compliance"]
    await save_workflow(definition)


async def _waiting(client: httpx.AsyncClient, secret: str, run_worker: Any, workflow: str) -> str:
    execution_id = await start(client, secret, workflow_id=workflow, csv_data=rows(2))
    await run_worker()
    assert (await execution_row(execution_id))["status"] == "pending_approval"
    return execution_id


async def _join(group: str) -> None:
    reviewer = await User.select(User.id).where(User.email == "reviewer@example.com").first()
    assert reviewer is not None
    await users.set_groups(Actor.system(), reviewer["id"], group)


def _listed(html: str) -> list[str]:
    return re.findall(LINK, html)


async def test_a_reviewer_outside_the_groups_finds_the_execution_nowhere_on_the_dashboard(
    client: httpx.AsyncClient,
    reviewer_client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    run_worker: Any,
    api_key: str,
) -> None:
    await _grouped_workflow()
    hidden = await _waiting(client, api_key, run_worker, GROUPED)
    open_one = await _waiting(client, api_key, run_worker, BFSI_WORKFLOW_ID)
    row_id = (await row_states(hidden))[0]["id"]
    htmx = {"HX-Request": "true"}

    listed = (await reviewer_client.get("/dashboard/executions")).text
    filtered = (
        await reviewer_client.get(
            f"/dashboard/executions?workflow={GROUPED}&status=pending_approval"
        )
    ).text
    table = await reviewer_client.get(
        "/dashboard/executions?status=pending_approval",
        headers={**htmx, "HX-Target": "executions-table"},
    )
    unknown = await reviewer_client.get(f"/dashboard/executions/{uuid4()}")
    pages = {
        "detail": await reviewer_client.get(f"/dashboard/executions/{hidden}"),
        "status": await reviewer_client.get(f"/dashboard/executions/{hidden}/status", headers=htmx),
        "shown status": await reviewer_client.get(
            f"/dashboard/executions/{hidden}/status?shown=pending_approval", headers=htmx
        ),
        "review": await reviewer_client.get(f"/dashboard/approvals/{hidden}"),
        "row": await reviewer_client.get(
            f"/dashboard/approvals/{hidden}/rows/{row_id}", headers=htmx
        ),
        "edit form": await reviewer_client.get(
            f"/dashboard/approvals/{hidden}/rows/{row_id}/edit", headers=htmx
        ),
    }

    assert _listed(listed) == [open_one]
    assert "1 in all" in listed
    assert hidden not in filtered and "No executions match." in filtered
    assert _listed(table.text) == [open_one] and hidden not in table.text
    assert unknown.status_code == 404
    for name, response in pages.items():
        assert response.status_code == 404, name
        assert "Execution not found" in response.text, name
        assert "John Doe" not in response.text, name  # no row, no message
    # The same page as an id that does not exist: whether it exists does not show.
    assert pages["detail"].text == unknown.text
    # An admin sees everything.
    admin_listed = (await admin_client.get("/dashboard/executions")).text
    assert _listed(admin_listed) == [open_one, hidden] and "2 in all" in admin_listed
    assert (await admin_client.get(f"/dashboard/executions/{hidden}")).status_code == 200

    await _join("compliance, risk")

    member = (await reviewer_client.get("/dashboard/executions")).text
    assert _listed(member) == [open_one, hidden] and "2 in all" in member
    detail = await reviewer_client.get(f"/dashboard/executions/{hidden}")
    assert detail.status_code == 200 and "John Doe" in detail.text
    status = await reviewer_client.get(f"/dashboard/executions/{hidden}/status", headers=htmx)
    assert status.status_code == 200 and f'id="status-{hidden}"' in status.text
    review = await reviewer_client.get(f"/dashboard/approvals/{hidden}")
    assert review.status_code == 200 and "John Doe" in review.text


async def test_a_reviewer_in_other_groups_pages_through_only_what_they_may_see(
    client: httpx.AsyncClient,
    reviewer_client: httpx.AsyncClient,
    api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _grouped_workflow()
    await _join("risk")  # a group, but not the workflow's
    started = []
    for number in range(9):  # every third one is for the compliance group only
        workflow = GROUPED if number % 3 == 0 else BFSI_WORKFLOW_ID
        started.append((workflow, await start(client, api_key, workflow_id=workflow)))
    visible = [e for w, e in reversed(started) if w == BFSI_WORKFLOW_ID]
    monkeypatch.setattr(executions_pages, "PER_PAGE", 2)

    seen: list[str] = []
    html = (await reviewer_client.get("/dashboard/executions")).text
    assert "6 in all" in html
    while True:
        seen += _listed(html)
        older = re.search(r'<a rel="next" href="\?([^"]*)">Older →</a>', html)
        if older is None:
            break
        html = (
            await reviewer_client.get("/dashboard/executions?" + older[1].replace("&amp;", "&"))
        ).text
        assert "6 in all" in html
    newer = re.search(r'<a rel="prev" href="\?([^"]*)">← Newer</a>', html)
    assert newer is not None
    back = (
        await reviewer_client.get("/dashboard/executions?" + newer[1].replace("&amp;", "&"))
    ).text

    assert seen == visible  # newest first, no gap, no repeat, none of the compliance ones
    assert _listed(back) == visible[2:4]


async def test_a_reviewer_in_no_group_sees_the_executions_of_workflows_without_groups_only(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    await _grouped_workflow()
    hidden = await _waiting(client, api_key, run_worker, GROUPED)
    open_one = await _waiting(client, api_key, run_worker, BFSI_WORKFLOW_ID)
    # An approval step with an empty list is everyone's too.
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = "workflow_empty_groups"
    for step in definition["steps"]:
        if step["type"] == "approval":
            step["settings"]["approverGroups"] = []
    await save_workflow(definition)
    empty = await _waiting(client, api_key, run_worker, "workflow_empty_groups")
    user = await User.select(User.groups).where(User.email == "reviewer@example.com").first()
    assert user is not None and not user["groups"]

    listed = (await reviewer_client.get("/dashboard/executions")).text
    detail = await reviewer_client.get(f"/dashboard/executions/{open_one}")
    status = await reviewer_client.get(
        f"/dashboard/executions/{empty}/status", headers={"HX-Request": "true"}
    )

    assert _listed(listed) == [empty, open_one] and "2 in all" in listed
    assert detail.status_code == 200 and "John Doe" in detail.text
    assert status.status_code == 200 and f'id="status-{empty}"' in status.text
    assert (await reviewer_client.get(f"/dashboard/executions/{hidden}")).status_code == 404
