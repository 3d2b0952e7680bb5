"""The audit trail through the dashboard: every change a user makes is recorded with their
email, address and browser; sign-ins; the audit page's filters, pages and CSV export; what a
reviewer may see; and the timeline on an execution's page."""

from __future__ import annotations

import csv
import io
import re
from typing import Any
from uuid import UUID

import httpx

from tests.factories import PASSWORD, post_form, rows, serving, start
from web.domain import audit, users
from web.domain.actors import Actor
from web.domain.audit import AuditFilters
from web.domain.tables import ApiKey, AuditEntry, ExecutionRow, User

UA = "Mozilla/5.0 (audit test)"


async def entries(**filters: Any) -> list[dict[str, Any]]:
    found = await audit.list_entries(AuditFilters(**filters), limit=1000, newest_first=False)
    return [entry.to_json() for entry in found]


async def user_id(email: str) -> str:
    row = await User.select(User.id).where(User.email == email).first()
    assert row is not None
    return str(row["id"])


async def waiting(client: httpx.AsyncClient, api_key: str, run_worker: Any, count: int = 3) -> str:
    execution_id = await start(client, api_key, csv_data=rows(count))
    await run_worker()
    return execution_id


async def row_ids() -> list[UUID]:
    return [
        r["id"] for r in await ExecutionRow.select(ExecutionRow.id).order_by(ExecutionRow.position)
    ]


async def test_row_decisions_edits_bulk_and_the_approval_are_recorded_as_the_reviewer(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await waiting(client, api_key, run_worker)
    first, second, _ = await row_ids()
    original = (
        await ExecutionRow.select(ExecutionRow.generated_content)
        .where(ExecutionRow.id == second)
        .first()
    )
    assert original is not None
    base = f"/dashboard/approvals/{execution_id}"
    headers = {"User-Agent": UA}
    edited = "Hi, your offer is ready. Reply STOP to opt out."

    decided = await post_form(
        reviewer_client,
        f"{base}/rows/{first}/decision",
        {"decision": "rejected", "seen": ""},
        headers=headers,
    )
    edit = await post_form(
        reviewer_client, f"{base}/rows/{second}/edit", {"content": edited}, headers=headers
    )
    bulk = await post_form(
        reviewer_client, f"{base}/rows/decision", {"decision": "approved"}, headers=headers
    )
    submitted = await post_form(
        reviewer_client, f"{base}/submit", {"confirmed": "yes", "comment": "ok"}, headers=headers
    )
    assert [r.status_code for r in (decided, edit, bulk, submitted)] == [303, 303, 303, 303]

    reviewer = await user_id("reviewer@example.com")
    found = await entries(execution_id=UUID(execution_id))
    shown = [
        (e["actorType"], e["actor"], e["action"], e["targetType"], e["before"], e["after"])
        for e in found
    ]
    assert shown == [
        (
            "user",
            "reviewer@example.com",
            "row.rejected",
            "execution_row",
            {"index": 0, "decision": None},
            {"index": 0, "decision": "rejected"},
        ),
        (
            "user",
            "reviewer@example.com",
            "row.edited",
            "execution_row",
            {"index": 1, "content": original["generated_content"]},
            {"index": 1, "content": edited},
        ),
        (
            "user",
            "reviewer@example.com",
            "row.approved",
            "execution",
            None,
            {"decision": "approved", "rows": 2, "bulk": True},
        ),
        (
            "user",
            "reviewer@example.com",
            "execution.approved",
            "execution",
            {"status": "pending_approval", "approvalStatus": "pending"},
            {
                "status": "running",
                "approvalStatus": "approved",
                "rowsApprovedUndecided": 0,
                "rows": [],
            },
        ),
    ]
    assert {(e["ip"], e["userAgent"]) for e in found} == {("127.0.0.1", UA)}
    assert found[0]["targetId"] == str(first)
    assert found[3]["comment"] == "ok"
    actor_ids = await AuditEntry.select(AuditEntry.actor_id).where(
        AuditEntry.execution_id == UUID(execution_id)
    )
    assert {r["actor_id"] for r in actor_ids} == {reviewer}


async def test_a_refused_row_decision_writes_no_entry(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await waiting(client, api_key, run_worker)
    first = (await row_ids())[0]
    before = await entries()
    # The reviewer saw "approved", but the row is undecided: a conflict, nothing saved.
    stale = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/{first}/decision",
        {"decision": "rejected", "seen": "approved"},
    )
    empty_edit = await post_form(
        reviewer_client,
        f"/dashboard/approvals/{execution_id}/rows/{first}/edit",
        {"content": "   "},
    )
    assert stale.status_code == 303 and empty_edit.status_code == 303
    assert await entries() == before


async def test_admin_acts_on_keys_workflows_and_users_are_recorded(
    admin_client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient
) -> None:
    form = {
        "name": "Acme site",
        "monthly_limit": "1000",
        "webhook_events": ["execution.completed"],
    }
    created = await post_form(admin_client, "/dashboard/keys/new", form)
    assert created.status_code == 303
    key = await ApiKey.select(ApiKey.id, ApiKey.prefix).first()
    assert key is not None
    keys = f"/dashboard/keys/{key['id']}"
    updated = await post_form(admin_client, f"{keys}/edit", {**form, "monthly_limit": "50"})
    rotated = await post_form(admin_client, f"{keys}/rotate", {"grace_hours": "1"})
    revoked = await post_form(admin_client, f"{keys}/revoke")
    workflow = "/dashboard/workflows/workflow_bfsi_marketing_template"
    off = await post_form(admin_client, f"{workflow}/deactivate")
    on = await post_form(admin_client, f"{workflow}/activate")
    invited = await post_form(
        admin_client, "/dashboard/users/new", {"email": "new@example.com", "role": "reviewer"}
    )
    reviewer = await user_id("reviewer@example.com")
    role = await post_form(admin_client, f"/dashboard/users/{reviewer}/role", {"role": "admin"})
    groups = await post_form(
        admin_client, f"/dashboard/users/{reviewer}/groups", {"groups": "risk, marketing"}
    )
    down = await post_form(admin_client, f"/dashboard/users/{reviewer}/deactivate")
    up = await post_form(admin_client, f"/dashboard/users/{reviewer}/reactivate")
    responses = (updated, rotated, revoked, off, on, invited, role, groups, down, up)
    assert all(r.status_code == 303 for r in responses), [r.status_code for r in responses]

    found = [
        e for e in await entries(actor="admin@example.com") if e["action"] != "signin.succeeded"
    ]
    rotated_to = found[2]["after"]
    changes = [(e["action"], e["before"], e["after"]) for e in found[1:]]
    assert changes == [
        ("key.updated", {"monthly_limit": 1000}, {"monthly_limit": 50}),
        ("key.rotated", {"prefix": key["prefix"]}, rotated_to),
        ("key.revoked", {"active": True, "prefix": rotated_to["prefix"]}, {"active": False}),
        ("workflow.deactivated", {"active": True}, {"active": False}),
        ("workflow.activated", {"active": False}, {"active": True}),
        ("user.invited", None, {"email": "new@example.com", "role": "reviewer"}),
        ("user.role_changed", {"role": "reviewer"}, {"role": "admin"}),
        ("user.groups_changed", {"groups": []}, {"groups": ["marketing", "risk"]}),
        ("user.deactivated", {"active": True}, {"active": False}),
        ("user.reactivated", {"active": False}, {"active": True}),
    ]
    assert sorted(rotated_to) == ["prefix", "previous_valid_until"]
    assert found[0]["action"] == "key.created"
    assert found[0]["after"]["name"] == "Acme site"
    assert found[0]["after"]["webhook_secret"] is None  # no URL: no secret; never its value
    assert found[2]["after"]["prefix"] != key["prefix"]
    assert [e["targetId"] for e in found[6:]] == [
        found[6]["targetId"],
        reviewer,
        reviewer,
        reviewer,
        reviewer,
    ]
    assert (await audit.verify()).ok


async def test_sign_ins_are_recorded_with_address_and_browser(app: Any) -> None:
    await users.create_user("ana@example.com", PASSWORD, "reviewer", actor=Actor.system())
    headers = {"User-Agent": UA}
    async with (
        serving(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
        ) as browser,
    ):

        async def attempt(email: str, password: str) -> int:
            form = {"email": email, "password": password, "next": "/dashboard"}
            return (await post_form(browser, "/dashboard/login", form, headers=headers)).status_code

        assert await attempt("nobody@example.com", "whatever password") == 400
        assert await attempt("ana@example.com", PASSWORD) == 303
        codes = [await attempt("ana@example.com", "wrong password") for _ in range(12)]
    assert codes == [400] * 10 + [429, 429]

    ana = await user_id("ana@example.com")
    found = [e for e in await entries(action="signin.*")]
    assert [(e["action"], e["actor"], e["targetId"]) for e in found] == [
        ("signin.failed", "nobody@example.com", None),
        ("signin.succeeded", "ana@example.com", ana),
        *[("signin.failed", "ana@example.com", ana)] * 10,
        ("signin.locked", "ana@example.com", None),  # once, when the lockout starts
    ]
    assert {(e["actorType"], e["ip"], e["userAgent"]) for e in found} == {("user", "127.0.0.1", UA)}
    assert PASSWORD not in str(found) and "wrong password" not in str(found)


async def test_the_audit_page_filters_pages_and_admins_see_everything(
    admin_client: httpx.AsyncClient,
) -> None:
    async with AuditEntry._meta.db.transaction():
        for n in range(55):
            await audit.record(Actor.system(), "key.updated", "api_key", f"k{n}", comment=f"c{n}")
    page = await admin_client.get("/dashboard/audit")
    assert page.status_code == 200
    html = page.text
    assert '<a href="/dashboard/audit" aria-current="page">Audit</a>' in html
    ids = [int(i) for i in re.findall(r'<tr id="entry-(\d+)">', html)]
    total = len(await entries())
    assert ids == list(range(total, total - 50, -1))  # newest first, 50 a page
    older = await admin_client.get(f"/dashboard/audit?before={ids[-1]}")
    more = [int(i) for i in re.findall(r'<tr id="entry-(\d+)">', older.text)]
    assert more == list(range(ids[-1] - 1, 0, -1))

    filtered = await admin_client.get("/dashboard/audit?action=user.invited")
    assert filtered.text.count('<tr id="entry-') == 1
    by_actor = await admin_client.get("/dashboard/audit?actor=system&action=key.updated")
    assert by_actor.text.count('<tr id="entry-') == 50
    bad = await admin_client.get("/dashboard/audit?since=yesterday")
    assert bad.status_code == 400
    assert "Since must be a date or an ISO 8601 time" in bad.text
    bad_execution = await admin_client.get("/dashboard/audit?execution=nope")
    assert bad_execution.status_code == 400


async def test_the_csv_export_applies_the_filters_and_defuses_formulas(
    admin_client: httpx.AsyncClient,
) -> None:
    async with AuditEntry._meta.db.transaction():
        await audit.record(
            Actor.system(), "key.updated", "api_key", "=HYPERLINK(1)", comment="@SUM(A1)"
        )
        await audit.record(Actor.system(), "key.revoked", "api_key", "plain", comment="-1+2")

    exported = await admin_client.get("/dashboard/audit/export.csv?actor=system&action=key.updated")

    assert exported.status_code == 200
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    assert exported.headers["content-disposition"] == 'attachment; filename="audit.csv"'
    table = list(csv.reader(io.StringIO(exported.text)))
    assert table[0] == [
        "id",
        "at",
        "actorType",
        "actor",
        "action",
        "targetType",
        "targetId",
        "executionId",
        "before",
        "after",
        "comment",
        "ip",
        "userAgent",
        "prevHash",
        "hash",
    ]
    (row,) = [r for r in table[1:] if r[4] == "key.updated"]
    assert len(table) == 2
    assert (row[3], row[6], row[10]) == ("system", "'=HYPERLINK(1)", "'@SUM(A1)")
    everything = await admin_client.get("/dashboard/audit/export.csv?action=key.revoked")
    (revoked,) = list(csv.reader(io.StringIO(everything.text)))[1:]
    assert revoked[10] == "'-1+2"


async def test_a_reviewer_sees_only_their_own_decisions(
    client: httpx.AsyncClient,
    reviewer_client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    run_worker: Any,
    api_key: str,
) -> None:
    execution_id = await waiting(client, api_key, run_worker)
    first, second, _ = await row_ids()
    base = f"/dashboard/approvals/{execution_id}/rows"
    mine = await post_form(reviewer_client, f"{base}/{first}/decision", {"decision": "approved"})
    theirs = await post_form(admin_client, f"{base}/{second}/decision", {"decision": "rejected"})
    assert mine.status_code == theirs.status_code == 303

    html = (await reviewer_client.get("/dashboard/audit")).text
    assert "Your own decisions" in html
    assert html.count('<tr id="entry-') == 1
    assert "<code>row.approved</code>" in html and "<code>row.rejected</code>" not in html
    assert "<code>signin.succeeded</code>" not in html
    exported = await reviewer_client.get("/dashboard/audit/export.csv")
    assert [r[4] for r in list(csv.reader(io.StringIO(exported.text)))[1:]] == ["row.approved"]
    everything = (await admin_client.get("/dashboard/audit")).text
    assert "<code>row.rejected</code>" in everything and "<code>row.approved</code>" in everything


async def test_the_execution_page_shows_its_timeline(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    execution_id = await waiting(client, api_key, run_worker, count=2)
    first = (await row_ids())[0]
    base = f"/dashboard/approvals/{execution_id}"
    await post_form(reviewer_client, f"{base}/rows/{first}/decision", {"decision": "rejected"})
    await post_form(reviewer_client, f"{base}/submit", {"confirmed": "yes", "comment": "fine"})
    await run_worker()

    html = (await reviewer_client.get(f"/dashboard/executions/{execution_id}")).text

    section = html[html.index('<section class="card" id="timeline">') :]
    section = section[: section.index("</section>")]
    titles = re.findall(r"<strong>([^<]+)</strong>", section)
    assert titles[0] == "Started"
    assert titles[-1] == "Finished: completed"
    assert "row.rejected" in titles and "execution.approved" in titles
    assert titles.index("row.rejected") < titles.index("execution.approved")
    assert "1 row sent" in titles
    assert any(t.startswith("Step ") for t in titles)
    assert "by reviewer@example.com" in section and "“fine”" in section
