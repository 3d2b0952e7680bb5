"""The audit trail through the public API and the CLI: each entry with its actor, target and
before/after, written in the change's own transaction (a refused change writes none), a chain
that concurrent writers never fork, PostgreSQL refusing UPDATE/DELETE/TRUNCATE, the retention
purge with its checkpoint, and `flowgate audit list/verify`."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import msgspec
import pytest

from tests.factories import PUBLIC, auth, rows, start
from web.domain import audit, clock
from web.domain.actors import Actor
from web.domain.approvals import decide_row
from web.domain.approvers import Approver
from web.domain.audit import GENESIS, AuditFilters
from web.domain.tables import AuditCheckpoint, AuditEntry, ExecutionRow
from web.settings import get_settings
from worker import jobs

UA = {"User-Agent": "acme-backend/2.1"}


def flowgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web.cli", *args], capture_output=True, text=True, check=False
    )


async def entries(**filters: Any) -> list[dict[str, Any]]:
    found = await audit.list_entries(AuditFilters(**filters), limit=1000, newest_first=False)
    return [entry.to_json() for entry in found]


async def waiting(client: httpx.AsyncClient, api_key: str, run_worker: Any, count: int = 3) -> str:
    execution_id = await start(client, api_key, csv_data=rows(count))
    await run_worker()
    return execution_id


def without_chain(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry without what the test cannot know beforehand (id, time, hashes)."""
    return {k: v for k, v in entry.items() if k not in ("id", "at", "prevHash", "hash")}


async def test_an_approval_through_the_api_records_the_key_its_rows_and_the_comment(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    execution_id = await waiting(client, api_key, run_worker)
    generated = (
        await ExecutionRow.select(ExecutionRow.generated_content)
        .where(ExecutionRow.position == 1)
        .first()
    )
    assert generated is not None
    edited = "Hi, your pre-approved offer is ready. Reply STOP to opt out."

    answer = await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve",
        json={
            "comment": "checked",
            "rows": [
                {"index": 0, "decision": "reject", "reason": "Asked not to be contacted"},
                {"index": 1, "decision": "approve", "content": edited},
            ],
        },
        headers={**auth(api_key), **UA},
    )

    assert answer.status_code == 200, answer.text
    (entry,) = await entries(action="execution.approved")
    assert without_chain(entry) == {
        "actorType": "api_key",
        "actor": f"key:{api_key[:8]}",
        "action": "execution.approved",
        "targetType": "execution",
        "targetId": execution_id,
        "executionId": execution_id,
        "before": {"status": "pending_approval", "approvalStatus": "pending"},
        "after": {
            "status": "running",
            "approvalStatus": "approved",
            "rowsApprovedUndecided": 1,
            "rows": [
                {"index": 0, "decision": "rejected", "reason": "Asked not to be contacted"},
                {
                    "index": 1,
                    "decision": "approved",
                    "original": generated["generated_content"],
                    "content": edited,
                },
            ],
        },
        "comment": "checked",
        "ip": "127.0.0.1",
        "userAgent": "acme-backend/2.1",
    }
    # The key's creation came first (tests/factories.create_key): the chain links them.
    first, second = await entries()
    assert first["action"] == "key.created" and first["actorType"] == "system"
    assert first["prevHash"] == GENESIS and second["prevHash"] == first["hash"]
    # The stored decided_by columns are filled as they always were.
    decided = await ExecutionRow.select(ExecutionRow.decided_by).where(ExecutionRow.position == 0)
    assert decided == [{"decided_by": "api_key:test customer"}]


async def test_reject_and_cancel_are_recorded_and_a_refused_one_writes_nothing(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    rejected = await waiting(client, api_key, run_worker)
    answer = await client.post(
        f"{PUBLIC}/executions/{rejected}/reject",
        json={"comment": "wrong list"},
        headers=auth(api_key),
    )
    assert answer.status_code == 200
    cancelled = await start(client, api_key)
    answer = await client.post(
        f"{PUBLIC}/executions/{cancelled}/cancel",
        json={"comment": "withdrawn"},
        headers=auth(api_key),
    )
    assert answer.status_code == 200
    before = await entries()

    # Refused: already final (409), twice decided (409), an unknown row (400), a bad comment.
    again = await client.post(f"{PUBLIC}/executions/{cancelled}/cancel", headers=auth(api_key))
    twice = await client.post(f"{PUBLIC}/executions/{rejected}/approve", headers=auth(api_key))
    other = await waiting(client, api_key, run_worker)
    bad_row = await client.post(
        f"{PUBLIC}/executions/{other}/approve",
        json={"rows": [{"index": 99, "decision": "approve"}]},
        headers=auth(api_key),
    )

    assert (again.status_code, twice.status_code, bad_row.status_code) == (409, 409, 400)
    assert await entries() == before
    assert [without_chain(e) for e in before[1:]] == [
        {
            "actorType": "api_key",
            "actor": f"key:{api_key[:8]}",
            "action": "execution.rejected",
            "targetType": "execution",
            "targetId": rejected,
            "executionId": rejected,
            "before": {"status": "pending_approval", "approvalStatus": "pending"},
            "after": {"status": "cancelled", "approvalStatus": "rejected"},
            "comment": "wrong list",
            "ip": "127.0.0.1",
            "userAgent": before[1]["userAgent"],
        },
        {
            "actorType": "api_key",
            "actor": f"key:{api_key[:8]}",
            "action": "execution.cancelled",
            "targetType": "execution",
            "targetId": cancelled,
            "executionId": cancelled,
            "before": {"status": "pending"},
            "after": {"status": "cancelled"},
            "comment": "withdrawn",
            "ip": "127.0.0.1",
            "userAgent": before[2]["userAgent"],
        },
    ]


async def test_twenty_parallel_row_decisions_keep_one_linear_chain(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    execution_id = await waiting(client, api_key, run_worker, count=20)
    row_ids = [
        r["id"] for r in await ExecutionRow.select(ExecutionRow.id).order_by(ExecutionRow.position)
    ]
    reviewers = [
        Actor.user(UUID(int=n + 1), f"r{n}@example.com", ip="10.0.0.1", user_agent="t")
        for n in range(20)
    ]

    await asyncio.gather(
        *(
            decide_row(UUID(execution_id), row_id, "approved", "", Approver(reviewer))
            for row_id, reviewer in zip(row_ids, reviewers, strict=True)
        )
    )

    chain = await entries()
    assert [e["id"] for e in chain] == list(range(1, 22))  # key.created + 20, gapless
    assert all(b["prevHash"] == a["hash"] for a, b in itertools.pairwise(chain))
    assert sorted(e["actor"] for e in chain[1:]) == sorted(r.name for r in reviewers)
    assert {e["targetId"] for e in chain[1:]} == {str(r) for r in row_ids}
    result = await audit.verify()
    assert (result.ok, result.checked, result.head_id) == (True, 21, 21)
    assert result.head_hash == chain[-1]["hash"]


async def _superuser() -> asyncpg.Connection[asyncpg.Record]:
    from piccolo_conf import DB

    connection: asyncpg.Connection[asyncpg.Record] = await DB.get_new_connection()
    return connection


async def test_postgresql_refuses_update_delete_and_truncate(
    client: httpx.AsyncClient, api_key: str
) -> None:
    connection = await _superuser()
    try:
        for sql in (
            "UPDATE audit_entry SET comment = 'rewritten'",
            "DELETE FROM audit_entry",
            "TRUNCATE audit_entry",
            "TRUNCATE audit_checkpoint",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await connection.execute(sql)
        # The purge's flag lets only entries older than its cutoff go, and never an UPDATE.
        async with connection.transaction():
            await connection.execute(
                "SELECT set_config('flowgate.audit_purge_before', $1, true)",
                (clock.now() - timedelta(days=1)).isoformat(),
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute("DELETE FROM audit_entry")
    finally:
        await connection.close()
    assert len(await entries()) == 1


async def test_a_refused_change_writes_no_entry_through_the_cli() -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    result = flowgate("keys", "revoke", unknown)
    assert result.returncode == 1
    assert await entries() == []


async def test_cli_changes_are_recorded_as_the_cli(tmp_path: Any) -> None:
    created = flowgate("keys", "create", "--name", "Acme", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    revoked = flowgate("keys", "revoke", key["id"])
    assert revoked.returncode == 0, revoked.stderr
    made = flowgate("users", "create", "--email", "ops@example.com", "--role", "reviewer")
    assert made.returncode == 0, made.stderr

    found = await entries()
    assert [(e["actorType"], e["actor"], e["action"], e["targetType"]) for e in found] == [
        ("cli", "cli", "key.created", "api_key"),
        ("cli", "cli", "key.revoked", "api_key"),
        ("cli", "cli", "user.invited", "user"),
    ]
    assert found[0]["targetId"] == key["id"]
    assert found[0]["after"]["prefix"] == key["prefix"]
    assert found[0]["after"]["name"] == "Acme"
    assert key["key"] not in json.dumps(found)  # never the secret
    assert found[1]["before"] == {"active": True, "prefix": key["prefix"]}
    assert found[1]["after"] == {"active": False}
    assert found[2]["after"] == {"email": "ops@example.com", "role": "reviewer"}
    assert (found[0]["ip"], found[0]["userAgent"]) == (None, None)


async def test_audit_list_json_has_the_issue_s_keys_and_filters(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    execution_id = await waiting(client, api_key, run_worker)
    row_id = (await ExecutionRow.select(ExecutionRow.id).first() or {})["id"]
    reviewer = Actor.user(UUID(int=7), "rita@example.com", ip="10.1.1.1", user_agent="Firefox")
    await decide_row(UUID(execution_id), row_id, "rejected", "", Approver(reviewer))
    answer = await client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key))
    assert answer.status_code == 200

    listed = flowgate("audit", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [list(line) for line in lines] == [
        [
            "id", "at", "actorType", "actor", "action", "targetType", "targetId",
            "executionId", "before", "after", "comment", "ip", "userAgent", "prevHash", "hash",
        ]
    ] * 3  # fmt: skip
    assert lines == await entries()
    assert lines[1]["at"].endswith("Z")

    def actions(*args: str) -> list[str]:
        result = flowgate("audit", "list", "--json", *args)
        assert result.returncode == 0, result.stderr
        return [json.loads(line)["action"] for line in result.stdout.splitlines()]

    assert actions("--execution", execution_id) == ["row.rejected", "execution.approved"]
    assert actions("--actor", "rita@example.com") == ["row.rejected"]
    assert actions("--actor", "system") == ["key.created"]
    assert actions("--action", "row.*") == ["row.rejected"]
    assert actions("--since", lines[1]["at"]) == ["row.rejected", "execution.approved"]
    assert actions("--until", lines[1]["at"]) == ["key.created"]
    plain = flowgate("audit", "list", "--action", "row.rejected")
    assert "rita@example.com" in plain.stdout and "row.rejected" in plain.stdout
    bad = flowgate("audit", "list", "--since", "yesterday")
    assert bad.returncode == 2 and "not an ISO 8601 date-time" in bad.stderr


async def test_verify_names_the_first_entry_edited_behind_the_trigger(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    await waiting(client, api_key, run_worker)
    for secret in ("a", "b"):
        created = flowgate("keys", "create", "--name", secret)
        assert created.returncode == 0
    intact = flowgate("audit", "verify")
    assert intact.returncode == 0, intact.stderr
    head = (await entries())[-1]
    assert intact.stdout.splitlines() == [
        "audit trail intact: 3 entries checked",
        f"head: entry 3 {head['hash']}",
    ]

    connection = await _superuser()
    try:
        await connection.execute("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_append_only")
        await connection.execute('UPDATE audit_entry SET after = \'{"name": "x"}\' WHERE id = 2')
        await connection.execute("ALTER TABLE audit_entry ENABLE TRIGGER audit_entry_append_only")
    finally:
        await connection.close()

    broken = flowgate("audit", "verify")
    assert broken.returncode == 1
    assert broken.stdout == ""
    assert broken.stderr.strip() == (
        "audit trail BROKEN at entry 2: entry 2 does not match its hash (1 entries before it match)"
    )


async def test_verify_sees_an_entry_deleted_behind_the_trigger_even_the_last() -> None:
    for name in ("a", "b", "c"):
        assert flowgate("keys", "create", "--name", name).returncode == 0
    connection = await _superuser()
    try:
        async with connection.transaction():
            await connection.execute("SET LOCAL session_replication_role = replica")
            await connection.execute("DELETE FROM audit_entry WHERE id = 3")
    finally:
        await connection.close()
    result = await audit.verify()
    assert (result.ok, result.bad_entry, result.problem) == (
        False,
        3,
        "the chain ends at entry 2 but its head is 3",
    )


async def test_the_retention_purge_keeps_verify_green_from_its_checkpoint() -> None:
    for name in ("a", "b", "c", "d", "e"):
        assert flowgate("keys", "create", "--name", name).returncode == 0
    old = await entries()
    clock.shift(timedelta(days=get_settings().audit_retention_days + 1))
    async with AuditEntry._meta.db.transaction():
        await audit.record(Actor.system(), "key.updated", "api_key", "x", after={"young": True})

    # The daily cron job, in batches of 2 here: three checkpoints, the last at entry 5.
    assert await audit.purge_expired(get_settings().audit_retention_days, batch=2) == (
        audit.Purged(deleted=5, checkpoint_id=5)
    )
    assert await jobs.purge_audit_entries({"settings": get_settings()}) == {
        "deleted": 0,
        "checkpoint": None,
    }

    left = await entries()
    assert [e["id"] for e in left] == [6]
    checkpoints = await AuditCheckpoint.select(
        AuditCheckpoint.entry_id, AuditCheckpoint.entry_hash, AuditCheckpoint.purged
    ).order_by(AuditCheckpoint.entry_id)
    assert checkpoints == [
        {"entry_id": 2, "entry_hash": old[1]["hash"], "purged": 2},
        {"entry_id": 4, "entry_hash": old[3]["hash"], "purged": 2},
        {"entry_id": 5, "entry_hash": old[4]["hash"], "purged": 1},
    ]
    result = await audit.verify()
    assert (result.ok, result.start, result.checked) == (True, 6, 1)
    verified = flowgate("audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.splitlines()[0] == (
        "audit trail intact: 1 entries checked (from entry 6, after the last purge)"
    )


async def test_record_refuses_to_run_outside_a_transaction() -> None:
    with pytest.raises(audit.NotInTransaction):
        await audit.record(Actor.system(), "key.updated", "api_key", "x")
    assert await entries() == []


async def test_an_anchor_kept_elsewhere_catches_a_rewrite_that_verifies() -> None:
    for name in ("a", "b", "c"):
        assert flowgate("keys", "create", "--name", name).returncode == 0
    head = flowgate("audit", "verify").stdout.splitlines()[-1]  # "head: entry 3 <hash>"
    anchor = ":".join(head.split()[2:])
    assert flowgate("audit", "verify", "--anchor", anchor).returncode == 0

    # A superuser rewrites the last entry, its hash and the head: the chain still verifies.
    (last,) = await audit.list_entries(AuditFilters(), limit=1)
    forged = msgspec.structs.replace(last, comment="nothing to see")
    forged = msgspec.structs.replace(forged, hash=forged.computed_hash())
    connection = await _superuser()
    try:
        async with connection.transaction():
            await connection.execute("SET LOCAL session_replication_role = replica")
            await connection.execute(
                "UPDATE audit_entry SET comment = $1, hash = $2 WHERE id = 3",
                forged.comment,
                forged.hash,
            )
            await connection.execute("UPDATE audit_head SET hash = $1", forged.hash)
    finally:
        await connection.close()

    assert flowgate("audit", "verify").returncode == 0
    caught = flowgate("audit", "verify", "--anchor", anchor)
    assert caught.returncode == 1
    assert caught.stderr.strip() == "audit trail REWRITTEN: entry 3 does not match the anchor kept"
    bad = flowgate("audit", "verify", "--anchor", "three")
    assert bad.returncode == 1 and "--anchor must be ID:HASH" in bad.stderr


async def test_a_redelivery_is_recorded_and_an_unknown_event_writes_nothing(
    client: httpx.AsyncClient, run_worker: Any, receiver: Any
) -> None:
    from tests.factories import create_key
    from web.domain.tables import WebhookEvent

    key = await create_key(webhook_url=receiver.url)
    execution_id = await start(client, key.secret)
    await run_worker()
    event = await WebhookEvent.select(WebhookEvent.id, WebhookEvent.event).first()
    assert event is not None
    unknown = flowgate("webhooks", "redeliver", "00000000-0000-4000-8000-000000000000")
    assert unknown.returncode == 1

    redelivered = flowgate("webhooks", "redeliver", str(event["id"]))

    assert redelivered.returncode == 0, redelivered.stderr
    (entry,) = await entries(action="webhook.redelivered")
    assert without_chain(entry) == {
        "actorType": "cli",
        "actor": "cli",
        "action": "webhook.redelivered",
        "targetType": "webhook_event",
        "targetId": str(event["id"]),
        "executionId": execution_id,
        "before": {"event": event["event"], "status": "delivered"},
        "after": {"event": event["event"], "status": "pending"},
        "comment": None,
        "ip": None,
        "userAgent": None,
    }
