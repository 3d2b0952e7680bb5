"""Approval deadlines (issue 15, section 3): a deadline fails closed, enforced by a job deferred
to it and, when every worker was down, by the next worker's reconciler; an approval racing the
deadline, exactly one wins. The reminder (`remindBefore`) has the same backstop and is sent
exactly once, whichever of its job and the reconciler comes first. Real server, arq workers (and
a real `flowgate worker` process), PostgreSQL, Redis, SMTP server and webhook receiver. Measured
figures are printed (`pytest -s`)."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
from arq.connections import ArqRedis
from arq.constants import job_key_prefix

from tests import mail_server
from tests.factories import PUBLIC, WorkerRunner, auth, create_key, execution_row, rows, start
from tests.receiver import Receiver
from tests.worker.test_recovery_times import WorkerProcess
from web.domain import approvals, clock, queue, recovery, users
from web.domain.actors import Actor
from web.domain.tables import ApiKey, Execution, Notification, SandboxMessage
from web.domain.workflows import BFSI_TEMPLATE, save_workflow
from worker.settings import functions, startup

WORKFLOW_ID = "workflow_with_deadline"
REASON = "Approval timed out after {}"


async def _workflow(**approval: Any) -> None:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = WORKFLOW_ID
    definition["name"] = "Campaign with a deadline"
    for step in definition["steps"]:
        if step["type"] == "approval":
            step["settings"].update(approval)
    await save_workflow(definition)


async def _runs_only(redis: ArqRedis) -> None:
    """Only the runs' loop (burst): the run reaches pending_approval; the deadline job waits on
    the deliveries' queue, which nothing serves."""
    await WorkerRunner(redis)._burst(functions(), startup, queue.RUN_QUEUE, None)


async def test_a_3s_deadline_cancels_the_execution_within_a_few_seconds_and_fails_closed(
    client: httpx.AsyncClient, receiver: Receiver, run_worker: Any
) -> None:
    key = await create_key(webhook_url=receiver.url)
    await _workflow(timeout="3s")
    execution_id = await start(client, key.secret, workflow_id=WORKFLOW_ID, csv_data=rows(3))

    await run_worker()  # runs, then the deliveries' loop until the deferred deadline job ran

    stored = await execution_row(execution_id)
    deadline: datetime = stored["approval_deadline"]
    late = (stored["completed_at"] - deadline).total_seconds()
    print(f"\ndeadline of 3s enforced {late * 1000:.0f} ms after it passed")
    assert 0 <= late < 3  # the job runs at the deadline; a loaded machine gets a margin
    requests = await receiver.wait_for(3)
    assert [r.headers["x-webhook-event"] for r in requests] == [
        "execution.started",
        "execution.pending_approval",
        "execution.cancelled",
    ]
    waited_from = datetime.fromisoformat(json.loads(requests[1].body)["timestamp"])
    assert abs((deadline - waited_from).total_seconds() - 3) < 0.5  # counted from the wait
    status = await client.get(
        f"{PUBLIC}/executions/{execution_id}/status", headers=auth(key.secret)
    )
    assert status.json() == {
        "id": execution_id,
        "status": "cancelled",
        "startedAt": status.json()["startedAt"],
        "completedAt": clock.iso(stored["completed_at"]),
        "error": "Approval timed out after 3s",
        "approvalStatus": "rejected",
    }
    results = await client.get(
        f"{PUBLIC}/executions/{execution_id}/results", headers=auth(key.secret)
    )
    body = results.json()
    assert body["output"] == {
        "successCount": 0,
        "failedCount": 0,
        "results": [
            {
                "customerId": f"CUST00{n}",
                "status": "rejected",
                "messageId": None,
                "reason": "Approval timed out after 3s",
            }
            for n in (1, 2, 3)
        ],
    }
    assert (body["status"], body["error"]) == ("cancelled", "Approval timed out after 3s")
    cancelled = json.loads(requests[2].body)
    assert cancelled["data"] == {
        "status": "cancelled",
        "startedAt": cancelled["data"]["startedAt"],
        "completedAt": clock.iso(stored["completed_at"]),
        "approvalStatus": "rejected",
        "error": "Approval timed out after 3s",
    }
    assert stored["approval_decided_by"] == "system"
    assert await SandboxMessage.count() == 0
    late_approval = await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(key.secret)
    )
    assert late_approval.status_code == 409
    assert late_approval.json()["message"] == (
        "Execution is not pending approval (status: cancelled)"
    )


async def test_an_approval_after_the_deadline_is_refused_and_the_reconciler_ends_it(
    client: httpx.AsyncClient, redis: ArqRedis, api_key: str
) -> None:
    await _workflow(timeout="1h")
    execution_id = await start(client, api_key, workflow_id=WORKFLOW_ID, csv_data=rows(2))
    await _runs_only(redis)
    stored = await execution_row(execution_id)
    assert stored["status"] == "pending_approval"
    assert abs((stored["approval_deadline"] - stored["updated_at"]) - timedelta(hours=1)) < (
        timedelta(seconds=1)
    )
    await Execution.raw(
        "UPDATE execution SET approval_deadline = now() - interval '1 second' WHERE id = {}",
        UUID(execution_id),
    )

    refused = await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key)
    )

    assert refused.status_code == 409
    assert refused.json()["message"] == (
        "The approval deadline has passed: the execution is being cancelled"
    )
    assert (await execution_row(execution_id))["status"] == "pending_approval"
    requeued = await recovery.requeue_stalled(redis, 5.0)
    assert requeued.timed_out == [UUID(execution_id)]
    ended = await execution_row(execution_id)
    assert (ended["status"], ended["error"]) == ("cancelled", "Approval timed out after 1h")
    assert (await recovery.requeue_stalled(redis, 5.0)).timed_out == []  # once


async def test_an_approval_racing_the_deadline_exactly_one_wins(
    client: httpx.AsyncClient, redis: ArqRedis, api_key: str
) -> None:
    await _workflow(timeout="1h")
    ids = [
        await start(client, api_key, workflow_id=WORKFLOW_ID, csv_data=rows(1)) for _ in range(6)
    ]
    await _runs_only(redis)
    outcomes = []
    for execution_id in ids:
        await Execution.raw(
            "UPDATE execution SET approval_deadline = now() + interval '50 milliseconds' "
            "WHERE id = {}",
            UUID(execution_id),
        )
        await asyncio.sleep(0.045)

        async def deadline_job(uid: UUID) -> Any:
            while True:  # as the job does when it came early: look again at the deadline
                result = await approvals.time_out(uid, smtp=False)
                if not isinstance(result, float):
                    return result
                await asyncio.sleep(result)

        approval, timed_out = await asyncio.gather(
            client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key)),
            deadline_job(UUID(execution_id)),
        )
        stored = await execution_row(execution_id)
        if approval.status_code == 200:
            assert timed_out is None
            assert (stored["status"], stored["approval_status"]) == ("running", "approved")
        else:
            assert approval.status_code == 409
            assert isinstance(timed_out, approvals.Queued)
            assert (stored["status"], stored["error"]) == (
                "cancelled",
                "Approval timed out after 1h",
            )
        outcomes.append(approval.status_code)
    print(f"\nraces: {outcomes.count(200)} approvals won, {outcomes.count(409)} deadlines won")


class _WorkerProcess:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "worker"],
            env={**os.environ, "FLOWGATE_LOG_LEVEL": "INFO"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


async def test_a_deadline_passed_while_no_worker_ran_is_enforced_when_the_next_one_starts(
    client: httpx.AsyncClient, redis: ArqRedis, api_key: str
) -> None:
    await _workflow(timeout="2s")
    execution_id = await start(client, api_key, workflow_id=WORKFLOW_ID, csv_data=rows(2))
    await _runs_only(redis)
    assert (await execution_row(execution_id))["status"] == "pending_approval"
    await redis.flushdb()  # every worker down and the deferred job lost with Redis
    await asyncio.sleep(2.5)
    assert (await execution_row(execution_id))["status"] == "pending_approval"

    started = time.monotonic()
    worker = _WorkerProcess()
    try:
        while (await execution_row(execution_id))["status"] != "cancelled":
            assert time.monotonic() - started < 40, "".join(worker.lines)
            await asyncio.sleep(0.05)
        took = time.monotonic() - started
        # The reconciler logs its pass after the commit the loop above saw: wait for the line.
        said = "reconciler timed out 1 execution(s) past their approval deadline"
        while said not in "".join(worker.lines) and time.monotonic() - started < 40:
            await asyncio.sleep(0.05)
    finally:
        worker.stop()

    print(f"\na deadline passed while no worker ran: enforced {took:.1f} s after a worker started")
    stored = await execution_row(execution_id)
    assert (stored["approval_status"], stored["error"]) == (
        "rejected",
        "Approval timed out after 2s",
    )
    assert "reconciler timed out 1 execution(s) past their approval deadline" in "".join(
        worker.lines
    )


async def test_the_queue_shows_the_time_left_and_puts_the_soonest_deadline_first(
    client: httpx.AsyncClient, reviewer_client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    no_deadline = await start(client, api_key, csv_data=rows(1))
    later = await start(client, api_key, csv_data=rows(1))
    sooner = await start(client, api_key, csv_data=rows(1))
    await run_worker()
    left = ((later, timedelta(hours=2, seconds=30)), (sooner, timedelta(minutes=10, seconds=30)))
    for execution_id, interval in left:
        await Execution.raw(
            "UPDATE execution SET approval_deadline = now() + {} WHERE id = {}",
            interval,
            UUID(execution_id),
        )

    html = (await reviewer_client.get("/dashboard/approvals")).text

    assert html.index(sooner) < html.index(later) < html.index(no_deadline)
    assert '<span class="time-left">10 min</span>' in html
    assert '<span class="time-left">2 h 0 min</span>' in html
    assert "<td>0 of 1 approvals</td>" in html
    assert '<span class="muted">no deadline</span>' in html


# --- reminders ---------------------------------------------------------------------------------

REMINDER = "Reminder: approval due"


async def _approvers() -> None:
    await users.create_user("lead@example.com", "a long password 1", "admin", actor=Actor.system())
    await users.create_user(
        "checker@example.com", "a long password 2", "reviewer", actor=Actor.system()
    )


async def _reminders(execution_id: str) -> list[dict[str, Any]]:
    return list(
        await Notification.select(Notification.channel, Notification.status)
        .where(Notification.execution == UUID(execution_id), Notification.kind == "reminder")
        .order_by(Notification.channel)
    )


async def test_a_reminder_due_while_no_worker_ran_is_sent_once_when_the_next_one_starts(
    client: httpx.AsyncClient, redis: ArqRedis, api_key: str, receiver: Receiver
) -> None:
    await _approvers()
    await _workflow(
        timeout="60s", remindBefore="58s", notifications={"slackWebhookUrl": receiver.url}
    )
    execution_id = await start(client, api_key, workflow_id=WORKFLOW_ID, csv_data=rows(2))
    await _runs_only(redis)
    waiting = await execution_row(execution_id)
    assert waiting["status"] == "pending_approval"
    remind_at: datetime = waiting["approval_remind_at"]
    assert remind_at == waiting["approval_deadline"] - timedelta(seconds=58)
    await redis.flushdb()  # every worker down and the deferred reminder job lost with Redis
    await asyncio.sleep(max(0.0, (remind_at - clock.now()).total_seconds()) + 0.5)
    assert await _reminders(execution_id) == []  # its moment passed: nothing sent it

    inbox = mail_server.Inbox()
    with mail_server.serving(inbox) as smtp_url:
        worker = WorkerProcess(FLOWGATE_SMTP_URL=smtp_url, FLOWGATE_NOTIFICATION_RETRY_DELAYS="0.1")
        try:
            started = time.monotonic()
            while sum(REMINDER in s for s in inbox.subjects()) < 2 or not any(
                REMINDER in json.loads(r.body)["text"] for r in receiver.requests
            ):
                assert time.monotonic() - started < 40, worker.log
                await asyncio.sleep(0.05)
            took = time.monotonic() - started
            said = "reconciler reminded the approvers of 1 execution(s) whose reminder was due"
            while said not in worker.log:
                assert time.monotonic() - started < 40, worker.log
                await asyncio.sleep(0.05)

            # A second pass, and the reminder job running late after all: nothing more.
            assert (await recovery.requeue_stalled(redis, 60.0, smtp=True)).reminded == []
            assert await queue.enqueue_reminder(redis, UUID(execution_id), remind_at)
            job_key = f"{job_key_prefix}{queue.APPROVAL_REMINDER}:{execution_id}:"
            job_key += str(round(remind_at.timestamp()))
            while await redis.exists(job_key):  # the worker ran it (no result is kept)
                assert time.monotonic() - started < 40, worker.log
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # what it might have queued would have gone out by now
        finally:
            worker.kill()

    print(f"\na reminder due while no worker ran: sent {took:.1f} s after a worker started")
    reminded_to = sorted(to for to, m in inbox.messages if REMINDER in str(m["Subject"]))
    assert reminded_to == [["checker@example.com"], ["lead@example.com"]]
    slack = [json.loads(r.body)["text"] for r in receiver.requests]
    assert sum(REMINDER in text for text in slack) == 1
    assert await _reminders(execution_id) == [
        {"channel": "email", "status": "sent"},
        {"channel": "email", "status": "sent"},
        {"channel": "slack", "status": "sent"},
    ]
    stored = await execution_row(execution_id)
    assert (stored["status"], stored["approval_remind_at"]) == ("pending_approval", None)
    assert worker.log.count(said) == 1


async def test_a_reminder_is_recorded_once_whichever_of_its_job_and_the_backstop_comes_first(
    client: httpx.AsyncClient, redis: ArqRedis, api_key: str
) -> None:
    await _approvers()
    await _workflow(timeout="1h", remindBefore="30m")
    ids = [
        await start(client, api_key, workflow_id=WORKFLOW_ID, csv_data=rows(1)) for _ in range(4)
    ]
    await _runs_only(redis)
    await Execution.raw(
        "UPDATE execution SET approval_remind_at = now() - interval '1 second' "
        "WHERE id = ANY({}::uuid[])",
        [UUID(e) for e in ids],
    )

    # The job and the backstop at the same moment, for each of them; then both once more.
    outcomes = await asyncio.gather(
        recovery.requeue_stalled(redis, 60.0, smtp=True),
        *(approvals.remind(UUID(e), smtp=True) for e in ids),
    )
    by_backstop = set(outcomes[0].reminded)  # type: ignore[union-attr]
    by_job = {UUID(e) for e, done in zip(ids, outcomes[1:], strict=True) if done is not None}
    again = await asyncio.gather(
        recovery.requeue_stalled(redis, 60.0, smtp=True),
        *(approvals.remind(UUID(e), smtp=True) for e in ids),
    )

    print(f"\nreminders: {len(by_job)} by their job, {len(by_backstop)} by the backstop")
    assert by_backstop | by_job == {UUID(e) for e in ids} and not by_backstop & by_job
    assert again[0].reminded == []  # type: ignore[union-attr]
    assert again[1:] == [None] * len(ids)
    for execution_id in ids:
        assert [n["channel"] for n in await _reminders(execution_id)] == ["email", "email"]


async def test_a_reminder_whose_deadline_passed_too_is_not_sent_the_timeout_is(
    client: httpx.AsyncClient, redis: ArqRedis, api_key: str
) -> None:
    await _approvers()
    await _workflow(timeout="1h", remindBefore="30m")
    execution_id = await start(client, api_key, workflow_id=WORKFLOW_ID, csv_data=rows(1))
    await _runs_only(redis)
    await Execution.raw(
        "UPDATE execution SET approval_remind_at = now() - interval '2 seconds', "
        "  approval_deadline = now() - interval '1 second' WHERE id = {}",
        UUID(execution_id),
    )

    requeued = await recovery.requeue_stalled(redis, 60.0, smtp=True)

    assert (requeued.timed_out, requeued.reminded) == ([UUID(execution_id)], [])
    assert await _reminders(execution_id) == []
    assert await approvals.remind(UUID(execution_id), smtp=True) is None  # its job, late
    kinds = await Notification.select(Notification.kind).where(
        Notification.execution == UUID(execution_id)
    )
    assert [n["kind"] for n in kinds] == ["timed_out"] * 2  # (the run's worker had no SMTP)


async def test_the_backstops_query_reads_only_what_is_due_through_its_partial_index(
    client: httpx.AsyncClient, redis: ArqRedis, api_key: str
) -> None:
    # Thousands of finished runs and of runs waiting whose reminder and deadline are far off.
    key = (await ApiKey.select(ApiKey.id).first())["id"]
    await start(client, api_key)
    await Execution.raw(
        "INSERT INTO execution (id, workflow, api_key, status, approval_deadline, "
        "  approval_remind_at) "
        "SELECT gen_random_uuid(), 'workflow_bfsi_marketing_template', {}, "
        "  CASE WHEN n % 2 = 0 THEN 'completed' ELSE 'pending_approval' END, "
        "  now() + interval '1 day', now() + interval '20 hours' "
        "FROM generate_series(1, 5000) AS n",
        key,
    )
    connection = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        await connection.execute("ANALYZE execution")
        plan = "\n".join(r[0] for r in await connection.fetch(f"EXPLAIN {approvals._DUE}"))
    finally:
        await connection.close()
    assert "Index Scan using execution_approval_due on execution" in plan, plan
    assert "Sort" not in plan, plan
    assert await recovery.requeue_stalled(redis, 60.0) == recovery.Requeued([], [])
