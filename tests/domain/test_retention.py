"""The retention purge (web.domain.retention): executions that ended before the cutoff lose
exactly their personal data and keep their summary; younger and unfinished ones are untouched;
dry runs change nothing; batches; the daily cron job and `flowgate purge`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from arq import Worker
from arq.connections import ArqRedis

from tests.factories import PUBLIC, auth, create_key, execute, rows
from tests.receiver import Receiver
from web.domain import clock, pool, queue, retention
from web.domain.actors import Actor
from web.domain.tables import Execution
from web.settings import get_settings

PERSON = "Zelda Quixotic-Farnsworth"
PHONE = "+919876501234"
BAD_PHONE = "98765-55555"  # fails compliance: quoted in the reason


def _input() -> list[dict[str, Any]]:
    data = rows(3)
    data[0]["name"] = PERSON
    data[0]["phone"] = PHONE
    data[1]["phone"] = BAD_PHONE
    return data


async def _run_to_the_end(
    client: httpx.AsyncClient, secret: str, run_worker: Any, idempotency_key: str
) -> str:
    response = await client.post(
        f"{PUBLIC}/agents/workflow_bfsi_marketing_template/execute",
        json={"input": {"csvData": _input()}, "description": "October campaign"},
        headers={**auth(secret), "Idempotency-Key": idempotency_key},
    )
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["executionId"]
    await run_worker()
    approved = await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve",
        json={"comment": f"Fine for {PERSON}"},
        headers=auth(secret),
    )
    assert approved.status_code == 200, approved.text
    await run_worker()
    return execution_id


async def _snapshot(execution_id: str) -> dict[str, Any]:
    """Every stored column of the execution and of everything that hangs off it."""
    uid = UUID(execution_id)
    async with pool.connection() as con:
        execution = dict(await con.fetchrow("SELECT * FROM execution WHERE id = $1", uid))
        row_list = [
            dict(r)
            for r in await con.fetch(
                "SELECT * FROM execution_row WHERE execution = $1 ORDER BY position", uid
            )
        ]
        sandbox = [
            dict(r)
            for r in await con.fetch(
                "SELECT s.* FROM sandbox_message s JOIN execution_row r ON r.id = s.execution_row "
                "WHERE r.execution = $1 ORDER BY r.position",
                uid,
            )
        ]
        events = [
            dict(r)
            for r in await con.fetch(
                "SELECT * FROM webhook_event WHERE execution = $1 ORDER BY sequence", uid
            )
        ]
        attempts = [
            dict(r)
            for r in await con.fetch(
                "SELECT a.* FROM webhook_attempt a JOIN webhook_event e ON e.id = a.event "
                "WHERE e.execution = $1 ORDER BY e.sequence, a.attempt_number",
                uid,
            )
        ]
        answers = [
            dict(r)
            for r in await con.fetch(
                "SELECT * FROM idempotent_request WHERE body LIKE $1", f"%{execution_id}%"
            )
        ]
    return {
        "execution": execution,
        "rows": row_list,
        "sandbox": sandbox,
        "events": events,
        "attempts": attempts,
        "answers": answers,
    }


async def _end_days_ago(execution_id: str, days: int) -> None:
    await Execution.raw(
        "UPDATE execution SET completed_at = now() - make_interval(days => {}) WHERE id = {}",
        days,
        UUID(execution_id),
    )


async def test_an_old_execution_loses_exactly_its_personal_data_and_keeps_its_summary(
    client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    receiver: Receiver,
    run_worker: Any,
) -> None:
    new = await create_key(webhook_url=receiver.url)
    old = await _run_to_the_end(client, new.secret, run_worker, "old-one")
    young = await _run_to_the_end(client, new.secret, run_worker, "young-one")
    unfinished = (
        await client.post(
            f"{PUBLIC}/agents/workflow_bfsi_marketing_template/execute",
            json={"input": {"csvData": _input()}},
            headers=auth(new.secret),
        )
    ).json()["executionId"]
    await run_worker()  # pending_approval: not ended, however old
    await Execution.raw(
        "UPDATE execution SET created_at = now() - interval '200 days', "
        "started_at = now() - interval '200 days' WHERE id = {}",
        UUID(unfinished),
    )
    await _end_days_ago(old, 91)
    await _end_days_ago(young, 89)
    before = {e: await _snapshot(e) for e in (old, young, unfinished)}
    assert json.loads(before[old]["rows"][0]["data"])["name"] == PERSON
    assert BAD_PHONE in before[old]["rows"][1]["compliance_reasons"]
    assert len(before[old]["events"]) == 3 and len(before[old]["attempts"]) == 3
    status_before = (
        await client.get(f"{PUBLIC}/executions/{old}/status", headers=auth(new.secret))
    ).json()
    expected = {
        "executions": 1,
        "rows": 3,
        "sandbox_messages": 2,
        "webhook_bodies": 3,
        "webhook_answers": 3,
        "idempotency_answers": 1,
    }

    dry = await retention.purge_personal_data(clock.now() - timedelta(days=90), dry_run=True)
    assert dry.counts == expected
    assert {e: await _snapshot(e) for e in (old, young, unfinished)} == before

    report = await retention.purge_personal_data(clock.now() - timedelta(days=90))
    assert report.counts == expected
    assert report.batches == 1
    after = {e: await _snapshot(e) for e in (old, young, unfinished)}
    assert after[young] == before[young]
    assert after[unfinished] == before[unfinished]

    # The execution: summary kept, comment gone, results without customerId or texts.
    execution_before, execution_after = before[old]["execution"], after[old]["execution"]
    assert execution_after["personal_data_purged_at"] is not None
    changed = {k for k in execution_before if execution_before[k] != execution_after[k]}
    assert changed == {"approval_comment", "output", "personal_data_purged_at"}
    assert execution_after["approval_comment"] is None
    output_before = json.loads(execution_before["output"])
    message_ids = [r["messageId"] for r in output_before["results"]]
    assert json.loads(execution_after["output"]) == {
        "successCount": 2,
        "failedCount": 0,
        "results": [
            {"customerId": None, "status": "sent", "messageId": message_ids[0], "purged": True},
            {
                "customerId": None,
                "status": "skipped",
                "messageId": None,
                "reason": retention.REMOVED,
                "purged": True,
            },
            {"customerId": None, "status": "sent", "messageId": message_ids[2], "purged": True},
        ],
    }

    # Rows: exactly the personal columns.
    personal_columns = {
        "data",
        "generated_content",
        "original_content",
        "compliance_reasons",
        "decision_reason",
        "error",
        "message_id",
    }
    for row_before, row_after in zip(before[old]["rows"], after[old]["rows"], strict=True):
        assert {k for k in row_before if row_before[k] != row_after[k]} <= personal_columns
        assert row_after["data"] == "{}"
        assert row_after["generated_content"] is None and row_after["original_content"] is None
        assert row_after["compliance_reasons"] == "[]"
        assert row_after["compliance_status"] == row_before["compliance_status"]
        assert row_after["send_status"] == row_before["send_status"]
        assert row_after["decision"] == row_before["decision"]
    assert after[old]["rows"][1]["error"] == retention.REMOVED
    # Sandbox message ids are ours (random): kept, as the results keep them.
    assert [r["message_id"] for r in after[old]["rows"]] == message_ids
    assert [(s["recipient"], s["body"]) for s in after[old]["sandbox"]] == [("", "")] * 2
    assert [s["message_id"] for s in after[old]["sandbox"]] == [message_ids[0], message_ids[2]]
    assert [e["payload"] for e in after[old]["events"]] == [""] * 3
    assert [e["status"] for e in after[old]["events"]] == ["delivered"] * 3
    assert [a["response_body"] for a in after[old]["attempts"]] == [None] * 3
    assert [a["status_code"] for a in after[old]["attempts"]] == [200] * 3
    assert after[old]["answers"] == []
    assert len(after[young]["answers"]) == 1
    dumped = json.dumps(after[old], default=str)
    for personal in (PERSON, PHONE, PHONE[1:], BAD_PHONE, "customer1@example.com", "CUST001"):
        assert personal not in dumped

    # The public API still answers, in the spec's shapes.
    status = await client.get(f"{PUBLIC}/executions/{old}/status", headers=auth(new.secret))
    assert status.status_code == 200 and status.json() == status_before
    results = await client.get(f"{PUBLIC}/executions/{old}/results", headers=auth(new.secret))
    assert results.status_code == 200
    assert results.json()["output"] == json.loads(execution_after["output"])
    assert results.json()["status"] == "completed"
    # The dashboard: list and detail pages answer, without the personal data.
    listing = await admin_client.get("/dashboard/executions")
    assert listing.status_code == 200 and old in listing.text
    detail = await admin_client.get(f"/dashboard/executions/{old}")
    assert detail.status_code == 200
    assert PERSON not in detail.text and PHONE not in detail.text
    assert "removed by the retention policy" in detail.text
    # Idempotent: a second run finds nothing.
    again = await retention.purge_personal_data(clock.now() - timedelta(days=90))
    assert again.counts == dict.fromkeys(retention.KINDS, 0)
    assert {e: await _snapshot(e) for e in (old, young, unfinished)} == after


async def test_a_purged_event_is_not_redelivered(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any, redis: ArqRedis
) -> None:
    from web.domain import webhooks
    from web.domain.errors import Conflict

    new = await create_key(webhook_url=receiver.url)
    old = await _run_to_the_end(client, new.secret, run_worker, "k")
    await _end_days_ago(old, 100)
    await retention.purge_personal_data(clock.now() - timedelta(days=90))
    (event, *_) = (await _snapshot(old))["events"]
    with pytest.raises(Conflict, match="removed by the retention policy"):
        await webhooks.redeliver_event(redis, event["id"], actor=Actor.cli())
    assert await redis.zcard(queue.WEBHOOK_QUEUE) == 0
    assert (await _snapshot(old))["events"][0]["status"] == "delivered"


async def _many_old_executions(count: int) -> None:
    """`count` completed executions with one row each, ended 100 days ago (SQL: fast)."""
    key = await create_key()
    async with pool.connection() as con:
        await con.execute(
            "INSERT INTO execution (id, workflow, api_key, status, row_count, started_at, "
            "  completed_at, output) "
            "SELECT gen_random_uuid(), 'workflow_bfsi_marketing_template', $1, 'completed', 1, "
            "  now() - interval '101 days', now() - interval '100 days' + i * interval '1 s', "
            '  \'{"successCount": 0, "failedCount": 0, "results": '
            '    [{"customerId": "C1", "status": "skipped", "messageId": null}]}\' '
            "FROM generate_series(1, $2) AS i",
            key.id,
            count,
        )
        await con.execute(
            "INSERT INTO execution_row (id, execution, position, data) "
            'SELECT gen_random_uuid(), id, 0, \'{"name": "Someone"}\' FROM execution'
        )


async def test_batches_of_500_take_three_transactions_for_1200_executions() -> None:
    await _many_old_executions(1200)
    cutoff = clock.now() - timedelta(days=90)

    dry = await retention.purge_personal_data(cutoff, batch_size=500, dry_run=True)
    report = await retention.purge_personal_data(cutoff, batch_size=500)

    assert report.batches == dry.batches == 3
    assert report.counts == dry.counts
    assert report.counts["executions"] == 1200 and report.counts["rows"] == 1200
    async with pool.connection() as con:
        # now() is the transaction's start: one value per transaction, oldest first.
        marks = await con.fetch(
            "SELECT personal_data_purged_at, count(*) FROM execution "
            "GROUP BY 1 ORDER BY min(completed_at)"
        )
        assert [m["count"] for m in marks] == [500, 500, 200]
        assert await con.fetchval("SELECT count(*) FROM execution_row WHERE data <> '{}'") == 0
    again = await retention.purge_personal_data(cutoff, batch_size=500)
    assert again.counts == dict.fromkeys(retention.KINDS, 0)
    assert again.batches == 0


async def test_the_daily_cron_job_is_registered_and_runs_in_a_burst_worker(
    redis: ArqRedis,
) -> None:
    from worker.settings import WorkerSettings

    (daily,) = [c for c in WorkerSettings.cron_jobs if c.name == "cron:purge_personal_data"]
    assert (daily.hour, daily.minute, daily.second, daily.unique) == (3, 41, 30, True)
    assert {c.name for c in WorkerSettings.cron_jobs} == {
        f"cron:{name}" for name in queue.CRON_JOB_NAMES
    }
    await _many_old_executions(3)
    await Execution.raw(
        "UPDATE execution SET completed_at = now() - interval '10 days' WHERE id IN "
        "(SELECT id FROM execution ORDER BY completed_at LIMIT 1)"
    )
    settings = dataclasses.replace(get_settings(), retention_days=30)
    worker = Worker(
        functions=[],
        cron_jobs=[dataclasses.replace(daily, run_at_startup=True)],
        redis_pool=redis,
        burst=True,
        poll_delay=0,
        handle_signals=False,
        ctx={"settings": settings},
    )
    await worker.main()

    assert worker.jobs_complete == 1 and worker.jobs_failed == 0
    purged = await Execution.count().where(Execution.personal_data_purged_at.is_not_null())
    assert purged == 2  # the one that ended 10 days ago is younger than 30 days


def flowgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web.cli", *args], capture_output=True, text=True, check=False
    )


async def test_flowgate_purge_prints_the_counts_and_dry_run_changes_nothing() -> None:
    await _many_old_executions(2)  # ended 100 days ago; then one of them 40 hours ago
    await Execution.raw(
        "UPDATE execution SET completed_at = now() - interval '40 hours' WHERE id IN "
        "(SELECT id FROM execution ORDER BY completed_at LIMIT 1)"
    )
    one = {
        "executions": "1",
        "rows": "1",
        "sandbox_messages": "0",
        "webhook_bodies": "0",
        "webhook_answers": "0",
        "idempotency_answers": "0",
    }

    def counts(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
        assert result.returncode == 0, result.stderr
        return dict(line.split() for line in result.stdout.splitlines()[1:])

    dry = flowgate("purge", "--dry-run")  # FLOWGATE_RETENTION_DAYS: 90
    assert dry.stdout.startswith("would remove (dry run, nothing changed): personal data of ")
    assert counts(dry) == one
    assert await Execution.count().where(Execution.personal_data_purged_at.is_not_null()) == 0

    real = flowgate("purge")
    assert real.stdout.startswith("removed: personal data of executions that ended before ")
    assert counts(real) == one
    assert await Execution.count().where(Execution.personal_data_purged_at.is_not_null()) == 1

    assert counts(flowgate("purge", "--older-than", "36h")) == one
    assert counts(flowgate("purge", "--older-than", "1h")) == dict.fromkeys(one, "0")
    assert await Execution.count().where(Execution.personal_data_purged_at.is_null()) == 0


@pytest.mark.parametrize("value", ["90", "90x", "0d", "-5d", "1.5d", "d", "9999999d", ""])
def test_flowgate_purge_refuses_a_bad_age_with_exit_code_2(value: str) -> None:
    result = flowgate("purge", f"--older-than={value}")
    assert result.returncode == 2
    assert result.stdout == ""
    assert (
        f"argument --older-than: expected a whole number of days or hours, e.g. 90d or 36h, "
        f"got {value!r}" in result.stderr
    )


def test_parse_age() -> None:
    assert retention.parse_age("90d") == timedelta(days=90)
    assert retention.parse_age("36h") == timedelta(hours=36)
    assert retention.parse_age(" 7D ") == timedelta(days=7)


async def test_an_execution_that_ends_after_the_cutoff_is_not_purged(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    response = await execute(client, api_key, rows(1))
    execution_id = response.json()["executionId"]
    await run_worker()
    await client.post(f"{PUBLIC}/executions/{execution_id}/reject", headers=auth(api_key))
    report = await retention.purge_personal_data(clock.now() - timedelta(days=1))
    assert report.counts["executions"] == 0
    cancelled = await retention.purge_personal_data(clock.now() + timedelta(seconds=1))
    assert cancelled.counts["executions"] == 1  # ended (rejected): purged once past the cutoff
