"""The review screen a reviewer can live in (issue #15, section 5), through the real server
and worker, without JavaScript: triage tabs with counts, honest actions (a row failing
compliance cannot be approved, "Approve all undecided" keeps decisions already made, the
whole-execution decisions ask first), the live outcome, the word diff of an edit, undo, and a
reject reason when the workflow asks for one."""

from __future__ import annotations

import copy
import re
from typing import Any

import httpx

from tests.dashboard.test_approvals import HTMX, waiting
from tests.factories import execution_row, post_form, row_states, rows
from web.domain.tables import ExecutionRow, SandboxMessage
from web.domain.workflow_files import definition_problems
from web.domain.workflows import BFSI_TEMPLATE, save_workflow

PHONE_REASON = "phone is not an E.164 phone number: &#39;555&#39;"


def row_html(page: str, row_id: Any) -> str:
    found = re.search(rf'<tr id="row-{row_id}".*?</tr>', page, re.DOTALL)
    assert found is not None, f"row {row_id} not on the page"
    return found.group(0)


def shown_rows(page: str) -> list[str]:
    return re.findall(r'<tr id="row-([0-9a-f-]+)"', page)


def tab_counts(page: str) -> dict[str, int]:
    return {
        name: int(count)
        for name, count in re.findall(
            r'class="tab tab-(\w+)"[^>]*>\w+ <span class="count">(\d+)</span>', page
        )
    }


def outcome(page: str) -> str:
    found = re.search(r'<p class="outcome"[^>]*>(.*?)</p>', page, re.DOTALL)
    assert found is not None
    return re.sub(r"<[^>]+>", "", found.group(1))


async def decide(
    reviewer: httpx.AsyncClient, execution_id: str, row_id: Any, decision: str, seen: str = ""
) -> httpx.Response:
    return await post_form(
        reviewer,
        f"/dashboard/approvals/{execution_id}/rows/{row_id}/decision",
        {"decision": decision, "seen": seen},
        headers=HTMX,
    )


async def test_a_row_failing_compliance_cannot_be_approved_and_says_it_will_be_skipped(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    data = rows(2)
    data[1]["phone"] = "555"
    execution_id = await waiting(client, api_key, run_worker, csv_data=data)
    passing, failing = (r["id"] for r in await row_states(execution_id))

    page = (await reviewer_client.get(f"/dashboard/approvals/{execution_id}")).text
    row = row_html(page, failing)
    assert f"will be skipped: {PHONE_REASON}" in row
    assert ">Approve</button>" not in row and ">Reject</button>" in row
    assert ">Approve</button>" in row_html(page, passing)

    refused = await decide(reviewer_client, execution_id, failing, "approved")

    assert refused.status_code == 200
    shown = row_html(refused.text, failing)
    assert f"This row cannot be approved: it will be skipped: {PHONE_REASON}" in shown
    assert "badge-approved" not in shown
    assert (await row_states(execution_id))[1]["decision"] is None
    # Without JavaScript: the same refusal, in the row after the redirect.
    plain = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/{failing}/decision",
        {"decision": "approved", "seen": ""},
    )
    assert plain.status_code == 303
    again = (await reviewer_client.get(f"/dashboard/approvals/{execution_id}")).text
    assert "This row cannot be approved" in row_html(again, failing)
    # A row approved earlier that an edit made fail shows no "approved" badge either.
    await decide(reviewer_client, execution_id, passing, "approved")
    await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/{passing}/edit",
        {"content": "Guaranteed returns! Reply STOP to opt out"},
        headers=HTMX,
    )
    page = (await reviewer_client.get(f"/dashboard/approvals/{execution_id}")).text
    edited = row_html(page, passing)
    assert "will be skipped: Contains banned phrase: &#39;guaranteed returns&#39;" in edited
    assert "badge-approved" not in edited
    assert "<strong>0</strong> will be sent, <strong" in page


async def test_approve_all_fills_only_undecided_rows_and_says_so(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    data = rows(4)
    data[2]["phone"] = "555"
    execution_id = await waiting(client, api_key, run_worker, csv_data=data)
    ids = [r["id"] for r in await row_states(execution_id)]
    await decide(reviewer_client, execution_id, ids[1], "rejected")

    bulk = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/decision",
        {"decision": "approved"},
    )

    assert bulk.status_code == 303
    assert [r["decision"] for r in await row_states(execution_id)] == [
        "approved",
        "rejected",  # already rejected: stays rejected
        None,  # failing compliance: never approved
        "approved",
    ]
    page = (await reviewer_client.get(bulk.headers["location"])).text
    assert (
        "2 undecided rows approved (rows already decided keep their decision; rows failing "
        "compliance are not approved (they will be skipped))"
    ) in page
    assert ">Approve all undecided</button>" in page
    # "Reject all undecided" then fills the one left, and keeps the approvals.
    await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/decision",
        {"decision": "rejected"},
    )
    assert [r["decision"] for r in await row_states(execution_id)] == [
        "approved",
        "rejected",
        "rejected",
        "approved",
    ]


async def test_tabs_filter_the_rows_with_live_counts_without_javascript(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    data = rows(6)
    data[0]["phone"] = "555"
    execution_id = await waiting(client, api_key, run_worker, csv_data=data)
    ids = [str(r["id"]) for r in await row_states(execution_id)]
    await decide(reviewer_client, execution_id, ids[1], "rejected")
    await decide(reviewer_client, execution_id, ids[2], "approved")
    await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/{ids[3]}/edit",
        {"content": "Dear Priya, a new offer. Reply STOP to opt out"},
        headers=HTMX,
    )
    base = f"/dashboard/approvals/{execution_id}"

    expected = {
        "failing": [ids[0]],
        "undecided": [ids[3], ids[4], ids[5]],
        "edited": [ids[3]],
        "rejected": [ids[1]],
        "all": ids,
    }
    for tab, wanted in expected.items():
        page = (await reviewer_client.get(base, params={"show": tab})).text
        assert shown_rows(page) == wanted, tab
        assert tab_counts(page) == {
            "failing": 1,
            "undecided": 3,
            "edited": 1,
            "rejected": 1,
            "all": 6,
        }
        assert re.search(rf'class="tab tab-{tab}" aria-current="page"', page), tab
    assert shown_rows((await reviewer_client.get(base, params={"show": "bogus"})).text) == ids
    assert shown_rows((await reviewer_client.get(base)).text) == ids

    # A decision's answer carries the counts out of band, so the tabs never go stale; and a
    # plain form post keeps the reviewer on the tab they were on.
    swapped = await decide(reviewer_client, execution_id, ids[4], "approved")
    assert tab_counts(swapped.text)["undecided"] == 2
    plain = await post_form(
        reviewer_client,
        f"{base}/rows/{ids[5]}/decision",
        {"decision": "approved", "seen": "", "show": "undecided"},
    )
    assert plain.headers["location"] == f"{base}?show=undecided#row-{ids[5]}"
    page = (await reviewer_client.get(base, params={"show": "undecided"})).text
    assert shown_rows(page) == [ids[3]]
    assert "No rows under" not in page
    empty = (await reviewer_client.get(base, params={"show": "edited"})).text
    assert shown_rows(empty) == [ids[3]]


async def test_rejecting_the_whole_execution_asks_for_confirmation_first(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(3))
    url = f"/dashboard/approvals/{execution_id}/reject"

    asked = await post_form(reviewer_client, url, {"comment": "Off brand"})

    assert asked.status_code == 200
    assert "<h1>Reject the whole execution?</h1>" in asked.text
    assert "all 3 rows are rejected" in asked.text
    assert '<input type="hidden" name="confirmed" value="yes">' in asked.text
    assert ">Off brand</textarea>" in asked.text  # the comment is kept
    assert ">Yes, reject the whole execution</button>" in asked.text
    stored = await execution_row(execution_id)
    assert (stored["status"], stored["approval_status"]) == ("pending_approval", "pending")

    done = await post_form(reviewer_client, url, {"comment": "Off brand", "confirmed": "yes"})

    assert done.status_code == 303
    stored = await execution_row(execution_id)
    assert (stored["status"], stored["approval_status"]) == ("cancelled", "rejected")
    assert stored["approval_comment"] == "Off brand"


async def test_the_submit_area_says_what_will_happen_and_asks_before_sending(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    data = rows(10)
    data[4]["phone"] = "555"
    data[7]["phone"] = "556"
    execution_id = await waiting(client, api_key, run_worker, csv_data=data)
    ids = [r["id"] for r in await row_states(execution_id)]
    base = f"/dashboard/approvals/{execution_id}"
    page = (await reviewer_client.get(base)).text
    assert outcome(page) == (
        "8 will be sent, 2 skipped for compliance, 0 rejected "
        "(8 undecided: submitting approves them)"
    )

    swapped = await decide(reviewer_client, execution_id, ids[0], "rejected")
    assert outcome(swapped.text) == (
        "7 will be sent, 2 skipped for compliance, 1 rejected "
        "(7 undecided: submitting approves them)"
    )
    # A failing row rejected counts once, as rejected.
    await decide(reviewer_client, execution_id, ids[4], "rejected")
    page = (await reviewer_client.get(base)).text
    assert outcome(page).startswith("7 will be sent, 1 skipped for compliance, 2 rejected")

    asked = await post_form(reviewer_client, f"{base}/submit")
    assert asked.status_code == 200
    assert "<h1>Send the approved messages?</h1>" in asked.text
    assert outcome(asked.text) == "7 will be sent, 1 skipped for compliance, 2 rejected."
    assert "The 7 undecided rows will be approved and sent." in asked.text
    assert ">Send 7 messages</button>" in asked.text
    assert (await execution_row(execution_id))["status"] == "pending_approval"

    sent = await post_form(reviewer_client, f"{base}/submit", {"confirmed": "yes"})
    assert sent.status_code == 303
    await run_worker()
    assert (await execution_row(execution_id))["status"] == "completed"
    assert await SandboxMessage.count() == 7


async def test_an_edit_shows_a_word_diff_with_markup_escaped(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(1))
    row = (await row_states(execution_id))[0]
    original = row["generated_content"]
    assert original.startswith("Dear John, as a valued customer")
    new = original.replace("as a valued customer", "<b>dear</b> friend")

    answer = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/{row['id']}/edit",
        {"content": new},
        headers=HTMX,
    )

    shown = row_html(answer.text, row["id"])
    assert "<b>" not in shown
    assert "<h3>Original</h3><p>Dear John, <del>as a valued customer </del>you are" in shown
    assert (
        "<h3>Edited by reviewer@example.com</h3><p>Dear John, "
        "<ins>&lt;b&gt;dear&lt;/b&gt; friend </ins>you are"
    ) in shown
    assert '<span class="badge badge-edited">edited</span>' in shown


async def test_undo_puts_a_row_back_to_undecided(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(2))
    row_id = (await row_states(execution_id))[0]["id"]
    await decide(reviewer_client, execution_id, row_id, "approved")

    stale = await decide(reviewer_client, execution_id, row_id, "undecided", seen="rejected")
    assert "changed this row meanwhile" in stale.text
    assert (await row_states(execution_id))[0]["decision"] == "approved"
    cleared = await decide(reviewer_client, execution_id, row_id, "undecided", seen="approved")

    assert cleared.status_code == 200
    assert 'data-decision=""' in row_html(cleared.text, row_id)
    saved = (await row_states(execution_id))[0]
    assert (saved["decision"], saved["decided_by"], saved["decided_at"]) == (None, None, None)


async def test_a_reject_reason_is_asked_for_when_the_workflow_wants_one(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = "workflow_reasons"
    definition["steps"][2]["settings"].update(requireRejectReason=True)
    await save_workflow(definition)
    execution_id = await waiting(client, api_key, run_worker, workflow_id="workflow_reasons")
    row_id = (await row_states(execution_id))[0]["id"]
    page = (await reviewer_client.get(f"/dashboard/approvals/{execution_id}")).text
    assert f'<input id="reason-{row_id}" name="reason" class="reason" required' in row_html(
        page, row_id
    )

    refused = await decide(reviewer_client, execution_id, row_id, "rejected")
    assert "Give a reason to reject this row" in row_html(refused.text, row_id)
    assert (await row_states(execution_id))[0]["decision"] is None

    answer = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/{row_id}/decision",
        {"decision": "rejected", "seen": "", "reason": "Customer opted out by phone"},
        headers=HTMX,
    )
    assert "“Customer opted out by phone”" in row_html(answer.text, row_id)
    stored = await ExecutionRow.select(ExecutionRow.decision, ExecutionRow.decision_reason).where(
        ExecutionRow.execution == execution_id
    )
    assert stored[0] == {"decision": "rejected", "decision_reason": "Customer opted out by phone"}


def test_context_fields_and_the_reject_reason_setting_are_checked_like_the_others() -> None:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["steps"][2]["settings"].update(contextFields="credit_score")
    definition["steps"][2]["settings"].update(requireRejectReason="yes")
    assert definition_problems(definition) == [
        "steps[2].settings.contextFields: must be a list of strings",
        "steps[2].settings.requireRejectReason: must be true or false",
    ]
    assert BFSI_TEMPLATE["steps"][2]["settings"]["contextFields"] == [
        "credit_score",
        "income_bracket",
    ]
    assert definition_problems(BFSI_TEMPLATE) == []
