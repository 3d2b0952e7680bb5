"""Maker-checker (issue 15, section 2): requiredApprovals distinct approvers, no self-approval
for an editor, approverGroups, through the public API and the dashboard (real server, worker,
PostgreSQL, Redis)."""

from __future__ import annotations

import copy
from typing import Any
from uuid import UUID, uuid4

import httpx

from tests.factories import PUBLIC, auth, execution_row, post_form, row_states, rows, start
from web.domain import audit, users
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
    row_id = (await row_states(execution_id))[0]["id"]
    await post_form(
        admin_client,
        f"/dashboard/approvals/{execution_id}/rows/{row_id}/edit",
        {"content": "New text. Reply STOP."},
    )
    assert (await _approve(client, api_key, execution_id)).json()["approvalsReceived"] == 1

    response = await post_form(
        admin_client, f"/dashboard/approvals/{execution_id}/submit", {"confirmed": "yes"}
    )

    assert response.status_code == 303
    assert (await execution_row(execution_id))["status"] == "running"
    assert await _submissions(execution_id) == ["api_key:test customer", "admin@example.com"]


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


async def _trail(execution_id: str) -> list[tuple[str, str, Any]]:
    """(actor, action, after) of the execution's audit entries, oldest first."""
    entries = await audit.list_entries(
        audit.AuditFilters(execution_id=UUID(execution_id)), limit=100, newest_first=False
    )
    return [(e.actor, e.action, e.after) for e in entries]


async def _metadata(client: httpx.AsyncClient, secret: str, execution_id: str) -> Any:
    pending = await client.get(
        f"{PUBLIC}/executions/{execution_id}/pending-approval", headers=auth(secret)
    )
    assert pending.status_code == 200
    metadata = pending.json()["approvalData"]["metadata"]
    return (metadata["approvalsReceived"], metadata["approvalProgress"])


WITHDRAWN = (
    "Earlier approvals withdrawn (reviewer@example.com): they were given before your change, "
    "so they no longer count and the execution needs its approvals again"
)


async def test_an_edit_after_an_approval_withdraws_it_and_the_editor_still_cannot_complete(
    client: httpx.AsyncClient,
    reviewer_client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    run_worker: Any,
    api_key: str,
) -> None:
    execution_id = await _waiting(client, api_key, run_worker, requiredApprovals=2)
    submit = f"/dashboard/approvals/{execution_id}/submit"
    assert (await post_form(reviewer_client, submit, {"confirmed": "yes"})).status_code == 303
    assert await _submissions(execution_id) == ["reviewer@example.com"]
    row_id = (await row_states(execution_id))[1]["id"]
    new_text = "Hi Priya, a shorter offer. Reply STOP to opt out."

    edited = await post_form(
        admin_client,
        f"/dashboard/approvals/{execution_id}/rows/{row_id}/edit",
        {"content": new_text},
    )

    assert edited.status_code == 303
    assert await _submissions(execution_id) == []
    _, action, after = (await _trail(execution_id))[-1]
    assert action == "row.edited"
    withdrawn = ["reviewer@example.com"]
    assert after == {"index": 1, "content": new_text, "approvalsWithdrawn": withdrawn}
    assert await _metadata(client, api_key, execution_id) == (0, "0 of 2 approvals")
    review = (await admin_client.get(edited.headers["location"])).text
    assert WITHDRAWN in review  # told once, on the page the edit leads back to
    assert "0 of 2 approvals</strong> ·" in review
    assert WITHDRAWN not in (await admin_client.get(f"/dashboard/approvals/{execution_id}")).text
    detail = (await admin_client.get(f"/dashboard/executions/{execution_id}")).text
    assert "approvals withdrawn: reviewer@example.com" in detail  # the timeline

    again = await post_form(reviewer_client, submit, {"confirmed": "yes"})
    by_editor = await post_form(admin_client, submit, {"confirmed": "yes"})

    assert again.status_code == 303
    assert await _metadata(client, api_key, execution_id) == (1, "1 of 2 approvals")
    assert by_editor.status_code == 403
    assert "You edited the message of row 1: another approver must complete" in by_editor.text
    last = await _approve(client, api_key, execution_id)
    assert last.json()["approvalStatus"] == "approved"
    await run_worker()
    assert (await execution_row(execution_id))["status"] == "completed"
    assert await _submissions(execution_id) == ["reviewer@example.com", "api_key:test customer"]
    sent = await SandboxMessage.select(SandboxMessage.body)
    assert new_text in [m["body"] for m in sent]


async def test_a_row_decision_or_a_bulk_decision_withdraws_approvals_and_the_same_decision_does_not(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await _waiting(client, api_key, run_worker, requiredApprovals=2)
    assert (await _approve(client, api_key, execution_id)).status_code == 200
    first = (await row_states(execution_id))[0]["id"]
    decide = f"/dashboard/approvals/{execution_id}/rows/{first}/decision"
    htmx = {"HX-Request": "true"}

    rejected = await post_form(
        reviewer_client, decide, {"decision": "rejected", "seen": ""}, headers=htmx
    )

    assert rejected.status_code == 200
    assert await _submissions(execution_id) == []
    assert "Earlier approvals withdrawn (api_key:test customer)" in rejected.text
    assert '<section id="approvals-progress"' in rejected.text
    assert "0 of 2 approvals</strong>" in rejected.text
    _, action, after = (await _trail(execution_id))[-1]
    assert (action, after) == (
        "row.rejected",
        {"index": 0, "decision": "rejected", "approvalsWithdrawn": ["api_key:test customer"]},
    )
    assert await _metadata(client, api_key, execution_id) == (0, "0 of 2 approvals")

    # Approved again, then the same decision once more: nothing changed, nothing withdrawn.
    assert (await _approve(client, api_key, execution_id)).json()["approvalsReceived"] == 1
    same = await post_form(
        reviewer_client, decide, {"decision": "rejected", "seen": "rejected"}, headers=htmx
    )
    assert same.status_code == 200 and "withdrawn" not in same.text
    assert await _submissions(execution_id) == ["api_key:test customer"]
    assert "approvalsWithdrawn" not in (await _trail(execution_id))[-1][2]

    bulk_url = f"/dashboard/approvals/{execution_id}/rows/decision"
    bulk = await post_form(reviewer_client, bulk_url, {"decision": "approved"})

    assert bulk.status_code == 303
    assert await _submissions(execution_id) == []
    _, action, after = (await _trail(execution_id))[-1]
    assert (action, after) == (
        "row.approved",
        {
            "decision": "approved",
            "rows": 2,
            "bulk": True,
            "approvalsWithdrawn": ["api_key:test customer"],
        },
    )
    page = (await reviewer_client.get(bulk.headers["location"])).text
    assert "2 undecided rows approved" in page
    assert "Earlier approvals withdrawn (api_key:test customer)" in page
    assert "0 of 2 approvals</strong>" in page
    assert await _metadata(client, api_key, execution_id) == (0, "0 of 2 approvals")


async def test_an_api_approval_changing_a_row_withdraws_the_others_one_repeating_rows_keeps_them(
    client: httpx.AsyncClient,
    reviewer_client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    run_worker: Any,
    api_key: str,
) -> None:
    submit = {"confirmed": "yes"}
    # Changing a row: the reviewer's earlier approval goes, the key's own counts (1 of 2).
    changed = await _waiting(client, api_key, run_worker, requiredApprovals=2)
    await post_form(reviewer_client, f"/dashboard/approvals/{changed}/submit", submit)
    choice = {"index": 2, "decision": "reject", "reason": "Asked not to be contacted"}

    answer = await client.post(
        f"{PUBLIC}/executions/{changed}/approve",
        json={"comment": "one row out", "rows": [choice]},
        headers=auth(api_key),
    )

    assert answer.status_code == 200
    assert answer.json() == {
        "executionId": changed,
        "status": "approved",
        "message": "Approval recorded (1 of 2 approvals): the execution waits for 1 more",
        "approvalStatus": "pending",
        "approvalsReceived": 1,
        "approvalsRequired": 2,
    }
    assert await _submissions(changed) == ["api_key:test customer"]
    _, action, after = (await _trail(changed))[-1]
    assert action == "execution.approved"
    assert after["approvalsWithdrawn"] == ["reviewer@example.com"]
    assert after["approvalsReceived"] == 1
    assert await _metadata(client, api_key, changed) == (1, "1 of 2 approvals")
    review = (await reviewer_client.get(f"/dashboard/approvals/{changed}")).text
    assert "1 of 2 approvals</strong>: api_key:test customer" in review

    # Repeating what a row already says changes nothing: the reviewer's approval stays.
    kept = await _waiting(client, api_key, run_worker, requiredApprovals=2)
    row = (await row_states(kept))[0]["id"]
    await post_form(
        admin_client,
        f"/dashboard/approvals/{kept}/rows/{row}/decision",
        {"decision": "rejected", "seen": ""},
    )
    await post_form(reviewer_client, f"/dashboard/approvals/{kept}/submit", submit)

    final = await client.post(
        f"{PUBLIC}/executions/{kept}/approve",
        json={"rows": [{"index": 0, "decision": "reject"}]},
        headers=auth(api_key),
    )

    assert final.status_code == 200
    assert (final.json()["approvalStatus"], final.json()["approvalsReceived"]) == ("approved", 2)
    assert await _submissions(kept) == ["reviewer@example.com", "api_key:test customer"]
    assert "approvalsWithdrawn" not in (await _trail(kept))[-1][2]
