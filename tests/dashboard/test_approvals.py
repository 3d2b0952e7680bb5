"""The approvals queue and the review screen, row by row."""

from __future__ import annotations

import copy
import re
from typing import Any
from uuid import UUID

import httpx

from tests.factories import PUBLIC, auth, execution_row, post_form, row_states, rows, start
from web.domain.tables import SandboxMessage
from web.domain.workflows import BFSI_TEMPLATE, save_workflow

HTMX = {"HX-Request": "true"}


async def waiting(client: httpx.AsyncClient, secret: str, run_worker: Any, **kwargs: Any) -> str:
    execution_id = await start(client, secret, **kwargs)
    await run_worker()
    assert (await execution_row(execution_id))["status"] == "pending_approval"
    return execution_id


async def test_the_queue_lists_waiting_executions_oldest_first_with_counts(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    data = rows(4)
    data[0]["phone"] = "123"
    first = await waiting(client, api_key, run_worker, csv_data=data)
    second = await waiting(client, api_key, run_worker, csv_data=rows(2))

    html = (await reviewer_client.get("/dashboard/approvals")).text

    assert "2 executions, soonest deadline first, then oldest" in html
    assert html.index(first) < html.index(second)
    assert '<td class="num">4</td>' in html
    assert '<span class="bad">1</span>' in html  # one row failing compliance
    assert '<td class="num">0 / 4</td>' in html


async def test_an_empty_queue_says_so(reviewer_client: httpx.AsyncClient) -> None:
    html = (await reviewer_client.get("/dashboard/approvals")).text
    assert "Nothing waits for approval." in html


async def test_the_review_screen_shows_display_fields_and_compliance_reasons(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    data = rows(3)
    data[2]["phone"] = "555"
    execution_id = await waiting(client, api_key, run_worker, csv_data=data)

    html = (await reviewer_client.get(f"/dashboard/approvals/{execution_id}")).text

    assert "<h1>Review Generated WhatsApp Messages</h1>" in html
    assert "Please review the AI-generated content" in html
    headers = re.findall(r"<th>([^<]*)</th>", html)
    # displayFields, then the contextFields the workflow names (the offer's inputs).
    assert headers == [
        "#",
        "customerId",
        "name",
        "phone",
        "credit_score",
        "income_bracket",
        "Message",
        "Compliance",
        "Decision",
    ]
    assert html.count('<tr id="row-') == 3
    assert "will be skipped: phone is not an E.164 phone number: &#39;555&#39;" in html
    assert ">Approve all undecided</button>" in html and ">Reject all undecided</button>" in html


async def test_a_row_decision_is_saved_at_once_and_only_that_row_is_swapped(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(3))
    states = await row_states(execution_id)
    url = f"/dashboard/approvals/{execution_id}/rows/{states[1]['id']}/decision"

    response = await post_form(
        reviewer_client, url, {"decision": "rejected", "seen": ""}, headers=HTMX
    )

    assert response.status_code == 200
    assert response.text.startswith(
        f'<tr id="row-{states[1]["id"]}" class="review-row decision-rejected'
    )
    assert response.text.count("<tr") == 1
    assert "reviewer@example.com" in response.text
    # The counts above the table follow, swapped out of band.
    assert '<section id="review-summary" class="summary review-summary" hx-swap-oob="true"' in (
        response.text
    )
    assert "<strong>1</strong> rejected" in response.text
    assert 'Undecided <span class="count">2</span>' in response.text
    saved = (await row_states(execution_id))[1]
    assert saved["decision"] == "rejected"
    assert saved["decided_by"] == "reviewer@example.com"
    assert saved["decided_at"] is not None

    plain = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/{states[0]['id']}/decision",
        {"decision": "approved", "seen": ""},
    )
    assert plain.status_code == 303
    assert plain.headers["location"] == (
        f"/dashboard/approvals/{execution_id}#row-{states[0]['id']}"
    )
    assert (await row_states(execution_id))[0]["decision"] == "approved"


async def test_a_row_changed_by_someone_else_is_not_silently_overwritten(
    client: httpx.AsyncClient,
    reviewer_client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    run_worker: Any,
    api_key: str,
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(1))
    row_id = (await row_states(execution_id))[0]["id"]
    url = f"/dashboard/approvals/{execution_id}/rows/{row_id}/decision"
    await post_form(admin_client, url, {"decision": "rejected", "seen": ""}, headers=HTMX)

    # The reviewer's page still showed the row undecided.
    response = await post_form(
        reviewer_client, url, {"decision": "approved", "seen": ""}, headers=HTMX
    )

    assert response.status_code == 200
    assert "admin@example.com changed this row meanwhile (it is now rejected)" in response.text
    assert (await row_states(execution_id))[0]["decision"] == "rejected"


async def test_editing_a_message_keeps_the_original_and_checks_compliance_again(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(1))
    row = (await row_states(execution_id))[0]
    base = f"/dashboard/approvals/{execution_id}/rows/{row['id']}"

    form = await reviewer_client.get(f"{base}/edit", headers=HTMX)
    assert f'<textarea id="content-{row["id"]}" name="content"' in form.text
    failing = await post_form(
        reviewer_client, f"{base}/edit", {"content": "Guaranteed returns, act now!"}, headers=HTMX
    )
    assert failing.status_code == 200
    assert "Contains banned phrase: &#39;guaranteed returns&#39;" in failing.text
    saved = (await row_states(execution_id))[0]
    assert saved["generated_content"] == "Guaranteed returns, act now!"
    assert saved["original_content"] == row["generated_content"]
    assert saved["compliance_status"] == "failed"
    assert saved["edited_by"] == "reviewer@example.com"

    fixed = "Dear John, a better offer awaits. T&C apply. Reply STOP to opt out."
    await post_form(reviewer_client, f"{base}/edit", {"content": fixed}, headers=HTMX)
    saved = (await row_states(execution_id))[0]
    assert saved["generated_content"] == fixed
    assert saved["original_content"] == row["generated_content"]  # the first original stays
    assert saved["compliance_status"] == "passed" and saved["compliance_reasons"] == []

    no_js = await reviewer_client.get(f"{base}/edit")
    assert no_js.status_code == 303
    assert no_js.headers["location"].endswith(f"?editing={row['id']}#row-{row['id']}")
    page = await reviewer_client.get(no_js.headers["location"].split("#")[0])
    assert f'<textarea id="content-{row["id"]}"' in page.text


async def test_bulk_decisions_and_submit_resume_the_run_with_rejected_rows_reported(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(4))
    states = await row_states(execution_id)
    bulk = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/decision",
        {"decision": "approved"},
    )
    assert bulk.status_code == 303
    for index in (1, 3):
        await post_form(
            reviewer_client,
            f"/dashboard/approvals/{execution_id}/rows/{states[index]['id']}/decision",
            {"decision": "rejected", "seen": "approved"},
            headers=HTMX,
        )

    submitted = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/submit",
        {"comment": "Two out", "confirmed": "yes"},
    )

    assert submitted.status_code == 303
    assert submitted.headers["location"] == f"/dashboard/executions/{execution_id}"
    stored = await execution_row(execution_id)
    assert stored["approval_status"] == "approved"
    assert stored["approval_decided_by"] == "reviewer@example.com"
    assert stored["approval_comment"] == "Two out"
    await run_worker()
    results = (
        await client.get(f"{PUBLIC}/executions/{execution_id}/results", headers=auth(api_key))
    ).json()
    assert results["status"] == "completed"
    assert [r["status"] for r in results["output"]["results"]] == [
        "sent",
        "rejected",
        "sent",
        "rejected",
    ]
    assert results["output"]["successCount"] == 2
    assert await SandboxMessage.count() == 2


async def test_a_second_submit_is_refused_with_a_clear_message(
    client: httpx.AsyncClient,
    reviewer_client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    run_worker: Any,
    api_key: str,
) -> None:
    execution_id = await waiting(client, api_key, run_worker)
    url = f"/dashboard/approvals/{execution_id}/submit"
    assert (await post_form(admin_client, url, {"confirmed": "yes"})).status_code == 303

    second = await post_form(reviewer_client, url, {"comment": "me too", "confirmed": "yes"})
    unconfirmed = await post_form(reviewer_client, url, {"comment": "me too"})

    for answer in (second, unconfirmed):  # no confirmation page for a decided execution
        assert answer.status_code == 409
        assert "Execution is not pending approval (status: running)" in answer.text
    stored = await execution_row(execution_id)
    assert stored["approval_decided_by"] == "admin@example.com"
    assert stored["approval_comment"] is None
    row_id = (await row_states(execution_id))[0]["id"]
    late = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/{row_id}/decision",
        {"decision": "rejected", "seen": "approved"},
        headers=HTMX,
    )
    assert "no longer waiting for approval: it was decided by admin@example.com" in late.text
    review = (await reviewer_client.get(f"/dashboard/approvals/{execution_id}")).text
    assert "This execution is no longer waiting for approval" in review
    assert ">Approve</button>" not in review


async def test_rejecting_the_whole_execution_cancels_it(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(2))

    response = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/reject",
        {"comment": "Off brand", "confirmed": "yes"},
    )

    assert response.status_code == 303
    status = (
        await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(api_key))
    ).json()
    assert (status["status"], status["approvalStatus"]) == ("cancelled", "rejected")
    assert (await execution_row(execution_id))["approval_comment"] == "Off brand"


async def test_a_required_comment_is_enforced_and_bulk_can_be_switched_off(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = "workflow_strict"
    definition["steps"][2]["settings"].update(requireComment=True, allowBulkApproval=False)
    await save_workflow(definition)
    execution_id = await waiting(client, api_key, run_worker, workflow_id="workflow_strict")

    page = (await reviewer_client.get(f"/dashboard/approvals/{execution_id}")).text
    assert "Approve all" not in page
    confirm = await post_form(reviewer_client, f"/dashboard/approvals/{execution_id}/submit")
    assert confirm.status_code == 200 and "Comment (required)" in confirm.text
    no_comment = await post_form(
        reviewer_client, f"/dashboard/approvals/{execution_id}/submit", {"confirmed": "yes"}
    )
    assert no_comment.status_code == 400
    assert "A comment is required for this approval" in no_comment.text
    bulk = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/decision",
        {"decision": "approved"},
    )
    assert bulk.status_code == 409
    assert "does not allow bulk approval" in bulk.text
    assert (await execution_row(execution_id))["status"] == "pending_approval"
    assert all(r["decision"] is None for r in await row_states(execution_id))


async def test_api_and_dashboard_approvals_end_in_the_same_states(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    by_api = await waiting(client, api_key, run_worker, csv_data=rows(3))
    by_dashboard = await waiting(client, api_key, run_worker, csv_data=rows(3))

    await client.post(
        f"{PUBLIC}/executions/{by_api}/approve", json={"comment": "ok"}, headers=auth(api_key)
    )
    await post_form(
        reviewer_client,
        f"/dashboard/approvals/{by_dashboard}/submit",
        {"comment": "ok", "confirmed": "yes"},
    )
    await run_worker()

    def shape(execution: dict[str, Any]) -> tuple[Any, ...]:
        return (execution["status"], execution["approval_status"], execution["approval_comment"])

    assert shape(await execution_row(by_api)) == shape(await execution_row(by_dashboard))
    api_rows = [(r["decision"], r["send_status"]) for r in await row_states(by_api)]
    dash_rows = [(r["decision"], r["send_status"]) for r in await row_states(by_dashboard)]
    assert api_rows == dash_rows == [("approved", "sent")] * 3


async def test_an_unknown_row_or_decision_is_refused(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(1))
    row_id = (await row_states(execution_id))[0]["id"]
    unknown = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/{UUID(int=1)}/decision",
        {"decision": "approved", "seen": ""},
    )
    odd = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/{row_id}/decision",
        {"decision": "maybe", "seen": ""},
    )
    assert unknown.status_code == 404 and "Row not found" in unknown.text
    assert odd.status_code == 400 and "Decision must be approved or rejected" in odd.text


async def test_the_comment_rule_holds_for_every_caller(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    # One rule (web.domain.approvals), four callers: API approve and reject, dashboard submit
    # and reject. None of them decides anything without the comment.
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = "workflow_commented"
    definition["steps"][2]["settings"].update(requireComment=True)
    await save_workflow(definition)
    execution_id = await waiting(client, api_key, run_worker, workflow_id="workflow_commented")
    message = "A comment is required for this approval"

    for action in ("approve", "reject"):
        for body in (None, {"comment": "   "}):
            answer = await client.post(
                f"{PUBLIC}/executions/{execution_id}/{action}", json=body, headers=auth(api_key)
            )
            assert answer.status_code == 400, (action, body)
            assert answer.json()["message"] == message
    for action in ("submit", "reject"):
        for form in ({"comment": " "}, {"comment": " ", "confirmed": "yes"}, {"confirmed": "yes"}):
            page = await post_form(
                reviewer_client, f"/dashboard/approvals/{execution_id}/{action}", form
            )
            assert page.status_code == 400, (action, form)
            assert message in page.text
    stored = await execution_row(execution_id)
    assert (stored["status"], stored["approval_status"]) == ("pending_approval", "pending")

    done = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/reject",
        {"comment": "Off brand", "confirmed": "yes"},
    )
    assert done.status_code == 303
    assert (await execution_row(execution_id))["status"] == "cancelled"


async def test_an_htmx_request_for_an_unknown_row_is_a_404(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(1))
    base = f"/dashboard/approvals/{execution_id}/rows/{UUID(int=1)}"

    for url in (base, f"{base}/edit"):
        response = await reviewer_client.get(url, headers=HTMX)
        assert response.status_code == 404, url
        assert response.text == '<div class="flash error" role="alert">Row not found</div>'


def _row_html(page: str, row_id: Any) -> str:
    found = re.search(rf'<tr id="row-{row_id}".*?</tr>', page, re.DOTALL)
    assert found is not None, f"row {row_id} not on the page"
    return found.group(0)


async def test_a_failed_row_action_shows_its_error_in_that_row_without_javascript(
    client: httpx.AsyncClient,
    reviewer_client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    run_worker: Any,
    api_key: str,
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(2))
    first, second = (r["id"] for r in await row_states(execution_id))
    url = f"/dashboard/approvals/{execution_id}/rows/{first}/decision"
    await post_form(admin_client, url, {"decision": "rejected", "seen": ""})

    refused = await post_form(reviewer_client, url, {"decision": "approved", "seen": ""})

    assert refused.status_code == 303
    assert refused.headers["location"] == f"/dashboard/approvals/{execution_id}#row-{first}"
    page = (await reviewer_client.get(refused.headers["location"].split("#")[0])).text
    conflict = "admin@example.com changed this row meanwhile (it is now rejected)"
    assert conflict in _row_html(page, first)
    assert conflict not in _row_html(page, second)
    assert page.count(conflict) == 1  # in the row, not in the banner at the top
    assert (await row_states(execution_id))[0]["decision"] == "rejected"
    again = (await reviewer_client.get(f"/dashboard/approvals/{execution_id}")).text
    assert conflict not in again  # shown once

    edit = f"/dashboard/approvals/{execution_id}/rows/{second}/edit"
    empty = await post_form(reviewer_client, edit, {"content": "  "})
    assert empty.status_code == 303
    assert empty.headers["location"].endswith(f"?editing={second}#row-{second}")
    page = (await reviewer_client.get(empty.headers["location"].split("#")[0])).text
    row = _row_html(page, second)
    assert "The message cannot be empty" in row and f'<textarea id="content-{second}"' in row

    swapped = await post_form(reviewer_client, edit, {"content": ""}, headers=HTMX)
    assert swapped.status_code == 200
    assert swapped.text.startswith(f'<tr id="row-{second}"')
    assert "The message cannot be empty" in _row_html(swapped.text, second)
