"""Maker-checker (issue 15, section 2): requiredApprovals distinct approvers, no self-approval
for an editor, approverGroups, through the public API and the dashboard (real server, worker,
PostgreSQL, Redis)."""

from __future__ import annotations

import copy
from typing import Any
from uuid import UUID, uuid4

import httpx

from tests.factories import PUBLIC, auth, execution_row, post_form, row_states, rows, start
from web.domain import users
from web.domain.tables import ApprovalSubmission, SandboxMessage, User
from web.domain.workflows import BFSI_TEMPLATE, save_workflow

WORKFLOW_ID = "workflow_maker_checker"


async def _workflow(**approval: Any) -> None:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = WORKFLOW_ID
    definition["name"] = "Two pairs of eyes"
    for step in definition["steps"]:
        if step["type"] == "approval":
            step["settings"].update(approval)
    await save_workflow(definition)


async def _waiting(client: httpx.AsyncClient, secret: str, run_worker: Any, **approval: Any) -> str:
    await _workflow(**approval)
    execution_id = await start(client, secret, workflow_id=WORKFLOW_ID, csv_data=rows(3))
    await run_worker()
    assert (await execution_row(execution_id))["status"] == "pending_approval"
    return execution_id


async def _approve(
    client: httpx.AsyncClient, secret: str, execution_id: str, **headers: str
) -> httpx.Response:
    return await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve",
        json={"comment": "checked"},
        headers={**auth(secret), **headers},
    )


async def _submissions(execution_id: str) -> list[str]:
    found = (
        await ApprovalSubmission.select(ApprovalSubmission.approver_label)
        .where(ApprovalSubmission.execution == UUID(execution_id))
        .order_by(ApprovalSubmission.created_at)
    )
    return [row["approver_label"] for row in found]


async def test_two_approvals_an_api_key_and_a_reviewer_resume_the_run_and_the_same_key_twice_is_409(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await _waiting(client, api_key, run_worker, requiredApprovals=2)

    first = await _approve(client, api_key, execution_id)

    assert first.status_code == 200
    assert first.json() == {
        "executionId": execution_id,
        "status": "approved",
        "message": "Approval recorded (1 of 2 approvals): the execution waits for 1 more",
        "approvalStatus": "pending",
        "approvalsReceived": 1,
        "approvalsRequired": 2,
    }
    status = await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(api_key))
    assert (status.json()["status"], status.json()["approvalStatus"]) == (
        "pending_approval",
        "pending",
    )
    pending = await client.get(
        f"{PUBLIC}/executions/{execution_id}/pending-approval", headers=auth(api_key)
    )
    metadata = pending.json()["approvalData"]["metadata"]
    assert metadata["approvalsRequired"] == 2
    assert metadata["approvalsReceived"] == 1
    assert metadata["approvalProgress"] == "1 of 2 approvals"
    assert metadata["approvalDeadline"] is None
    review = (await reviewer_client.get(f"/dashboard/approvals/{execution_id}")).text
    assert "1 of 2 approvals</strong>: api_key:test customer" in review

    again = await _approve(client, api_key, execution_id)

    assert again.status_code == 409
    assert again.json() == {
        "statusCode": 409,
        "error": "Conflict",
        "message": "You have already approved this execution (1 of 2 approvals): another "
        "approver must approve it",
    }
    await run_worker()
    assert await SandboxMessage.count() == 0  # nothing is sent on one approval

    second = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/submit",
        {"confirmed": "yes", "comment": "ok"},
    )

    assert second.status_code == 303
    assert second.headers["location"] == f"/dashboard/executions/{execution_id}"
    await run_worker()
    stored = await execution_row(execution_id)
    assert (stored["status"], stored["approval_status"]) == ("completed", "approved")
    assert stored["approval_decided_by"] == "reviewer@example.com"
    assert await SandboxMessage.count() == 3
    assert await _submissions(execution_id) == ["api_key:test customer", "reviewer@example.com"]


async def test_an_idempotent_retry_of_the_first_approval_is_replayed_not_refused(
    client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await _waiting(client, api_key, run_worker, requiredApprovals=2)

    first = await _approve(client, api_key, execution_id, **{"Idempotency-Key": "a-1"})
    replay = await _approve(client, api_key, execution_id, **{"Idempotency-Key": "a-1"})

    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    assert await _submissions(execution_id) == ["api_key:test customer"]


async def test_two_dashboard_users_count_as_two_and_one_user_twice_is_refused(
    client: httpx.AsyncClient,
    reviewer_client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    run_worker: Any,
    api_key: str,
) -> None:
    execution_id = await _waiting(client, api_key, run_worker, requiredApprovals=2)
    url = f"/dashboard/approvals/{execution_id}/submit"

    first = await post_form(reviewer_client, url, {"confirmed": "yes"})
    assert first.status_code == 303
    assert first.headers["location"] == f"/dashboard/approvals/{execution_id}"
    page = (await reviewer_client.get(first.headers["location"])).text
    assert "Your approval is recorded (1 of 2 approvals)" in page
    twice = await post_form(reviewer_client, url, {"confirmed": "yes"})

    assert twice.status_code == 409
    assert "You have already approved this execution (1 of 2 approvals)" in twice.text
    assert (await execution_row(execution_id))["status"] == "pending_approval"
    assert (await post_form(admin_client, url, {"confirmed": "yes"})).status_code == 303
    assert (await execution_row(execution_id))["status"] == "running"
    assert await _submissions(execution_id) == ["reviewer@example.com", "admin@example.com"]


async def test_a_reject_by_either_approver_ends_it_after_one_approval(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await _waiting(client, api_key, run_worker, requiredApprovals=2)
    assert (await _approve(client, api_key, execution_id)).status_code == 200

    rejected = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/reject",
        {"confirmed": "yes", "comment": "No"},
    )

    assert rejected.status_code == 303
    await run_worker()
    results = await client.get(f"{PUBLIC}/executions/{execution_id}/results", headers=auth(api_key))
    body = results.json()
    assert (body["status"], body["error"]) == ("cancelled", None)
    assert [r["status"] for r in body["output"]["results"]] == ["rejected"] * 3
    assert await SandboxMessage.count() == 0


async def test_the_editor_of_a_row_cannot_give_the_last_approval(
    client: httpx.AsyncClient,
    reviewer_client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    run_worker: Any,
    api_key: str,
) -> None:
    execution_id = await _waiting(client, api_key, run_worker, requiredApprovals=2)
    row_id = (await row_states(execution_id))[1]["id"]
    edited = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/{row_id}/edit",
        {"content": "Hi, a shorter offer. Reply STOP to opt out."},
    )
    assert edited.status_code == 303
    first = await post_form(
        admin_client, f"/dashboard/approvals/{execution_id}/submit", {"confirmed": "yes"}
    )
    assert first.status_code == 303

    refused = await post_form(
        reviewer_client, f"/dashboard/approvals/{execution_id}/submit", {"confirmed": "yes"}
    )

    assert refused.status_code == 403
    assert (
        "You edited the message of row 1: another approver must complete this approval "
        "(the workflow does not allow self-approval)"
    ) in refused.text
    assert (await execution_row(execution_id))["status"] == "pending_approval"
    assert (await _approve(client, api_key, execution_id)).json()["approvalStatus"] == "approved"
    await run_worker()
    assert (await execution_row(execution_id))["status"] == "completed"


async def test_with_self_approval_allowed_the_editor_may_complete_it(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await _waiting(
        client, api_key, run_worker, requiredApprovals=2, allowSelfApproval=True
    )
    body = {"rows": [{"index": 0, "decision": "approve", "content": "New text. Reply STOP."}]}
    await post_form(
        admin_client, f"/dashboard/approvals/{execution_id}/submit", {"confirmed": "yes"}
    )

    response = await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve", json=body, headers=auth(api_key)
    )

    assert response.status_code == 200
    assert response.json()["approvalsReceived"] == 2


async def test_approver_groups_restrict_the_queue_the_review_and_the_decisions(
    client: httpx.AsyncClient,
    reviewer_client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    run_worker: Any,
    api_key: str,
) -> None:
    execution_id = await _waiting(client, api_key, run_worker, approverGroups=["compliance"])

    queue = (await reviewer_client.get("/dashboard/approvals")).text
    review = await reviewer_client.get(f"/dashboard/approvals/{execution_id}")
    submit = await post_form(
        reviewer_client, f"/dashboard/approvals/{execution_id}/submit", {"confirmed": "yes"}
    )
    by_api = await _approve(client, api_key, execution_id)

    assert execution_id not in queue and "Nothing waits for approval." in queue
    message = "Only members of the approver groups compliance (and admins) can decide"
    # Outside the groups the execution is not there: the unknown id's page, not a 403.
    unknown = await reviewer_client.get(f"/dashboard/approvals/{uuid4()}")
    assert review.status_code == 404 and "Execution not found" in review.text
    assert review.text == unknown.text
    assert submit.status_code == 403 and message in submit.text
    assert by_api.status_code == 403
    assert by_api.json() == {
        "statusCode": 403,
        "error": "Forbidden",
        "message": "Only members of the approver groups compliance can decide this execution: "
        "an API key is in no group",
    }
    assert execution_id in (await admin_client.get("/dashboard/approvals")).text
    reviewer = await User.select(User.id).where(User.email == "reviewer@example.com").first()
    assert reviewer is not None

    saved = await post_form(
        admin_client, f"/dashboard/users/{reviewer['id']}/groups", {"groups": "compliance, risk"}
    )

    assert saved.status_code == 303
    assert (await users.get_user(reviewer["id"])).groups == ["compliance", "risk"]
    assert execution_id in (await reviewer_client.get("/dashboard/approvals")).text
    assert (
        await post_form(
            reviewer_client, f"/dashboard/approvals/{execution_id}/submit", {"confirmed": "yes"}
        )
    ).status_code == 303
    assert (await execution_row(execution_id))["status"] == "running"


async def test_a_bad_group_name_is_refused_on_the_users_page_and_changes_nothing(
    reviewer_client: httpx.AsyncClient, admin_client: httpx.AsyncClient
) -> None:
    reviewer = await User.select(User.id).where(User.email == "reviewer@example.com").first()
    assert reviewer is not None

    response = await post_form(
        admin_client,
        f"/dashboard/users/{reviewer['id']}/groups",
        {"groups": "risk, <b>"},
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 400
    assert "is not a group name" in response.text
    assert (await users.get_user(reviewer["id"])).groups == []
