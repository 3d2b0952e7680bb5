"""Approval deadlines (issue 15, section 3): a deadline fails closed, enforced by a job deferred
to it and, when every worker was down, by the next worker's reconciler; an approval racing the
deadline, exactly one wins. Real server, arq workers (and a real `flowgate worker` process),
PostgreSQL, Redis and webhook receiver. Measured figures are printed (`pytest -s`)."""

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

import httpx
from arq.connections import ArqRedis

from tests.factories import PUBLIC, WorkerRunner, auth, create_key, execution_row, rows, start
from tests.receiver import Receiver
from web.domain import approvals, clock, queue, recovery
from web.domain.tables import Execution, SandboxMessage
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
