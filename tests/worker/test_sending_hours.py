"""Sending hours (`sendWindow` of a send_message step), through the real API and real
`flowgate worker` processes whose clock is moved with FLOWGATE_CLOCK_OFFSET_SECONDS (tests only):
each worker believes it is a few seconds before a window opens (or closes), so the window is
run for real without waiting hours. Approved rows outside the window wait as an arq job
deferred to the window's start (no worker busy), survive a worker restart and a Redis FLUSHDB
(the reconciler queues the job again, deferred to the same time), and are sent once it opens.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import httpx
import pytest
from arq.connections import ArqRedis

from tests.factories import PUBLIC, auth, execution_row, rows, start
from tests.worker.test_recovery_times import WorkerProcess
from web.domain import clock, queue
from web.domain.send_window import SendWindow
from web.domain.tables import ExecutionRow, SandboxMessage
from web.domain.workflow_files import definition_problems
from web.domain.workflows import BFSI_TEMPLATE, save_workflow

ZONE = "Asia/Kolkata"
WORKFLOW_ID = "workflow_sending_hours"


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


def _definition(window: dict[str, Any], **send: Any) -> dict[str, Any]:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = WORKFLOW_ID
    definition["name"] = "BFSI within sending hours"
    definition["steps"][3]["settings"] = {
        **definition["steps"][3]["settings"],
        "sendWindow": window,
        **send,
    }
    return definition


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "problems"),
    [
        (
            {"start": "9:00", "end": "21:00", "timezone": ZONE},
            ["steps[3].settings.sendWindow.start: must be a time of day as HH:MM (00:00 to 23:59)"],
        ),
        (
            {"start": "09:00", "end": "24:00", "timezone": ZONE},
            ["steps[3].settings.sendWindow.end: must be a time of day as HH:MM (00:00 to 23:59)"],
        ),
        (
            {"start": "09:00", "end": "21:00", "timezone": "India/Mumbai"},
            [
                "steps[3].settings.sendWindow.timezone: must be an IANA time zone name such as "
                "Asia/Kolkata, got 'India/Mumbai'"
            ],
        ),
        (
            {"start": "09:00", "end": "21:00", "timezone": "../../etc/passwd"},
            [
                "steps[3].settings.sendWindow.timezone: must be an IANA time zone name such as "
                "Asia/Kolkata, got '../../etc/passwd'"
            ],
        ),
        (
            {"start": "09:00", "end": "09:00", "timezone": ZONE},
            ["steps[3].settings.sendWindow: start and end must differ (the window would be empty)"],
        ),
        (
            {"start": "09:00", "timezone": ZONE, "days": "mon-fri"},
            [
                "steps[3].settings.sendWindow.days: unknown field",
                "steps[3].settings.sendWindow.end: required",
            ],
        ),
        (
            "09:00-21:00",
            ["steps[3].settings.sendWindow: must be an object with start, end and timezone"],
        ),
    ],
)
def test_a_bad_send_window_is_refused_naming_its_path(window: Any, problems: list[str]) -> None:
    assert definition_problems(_definition(window)) == problems


def test_a_valid_window_and_one_that_crosses_midnight_are_accepted() -> None:
    assert (
        definition_problems(_definition({"start": "09:00", "end": "21:00", "timezone": ZONE})) == []
    )
    assert (
        definition_problems(_definition({"start": "21:00", "end": "06:00", "timezone": "UTC"}))
        == []
    )


async def test_import_through_the_cli_names_the_bad_window(tmp_path: Any) -> None:
    import json
    import subprocess
    import sys

    path = tmp_path / "campaign.json"
    path.write_text(
        json.dumps(_definition({"start": "09:00", "end": "21:00", "timezone": "Mars/Olympus"}))
    )
    done = subprocess.run(
        [sys.executable, "-m", "web.cli", "workflows", "import", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "steps[3].settings.sendWindow.timezone: must be an IANA time zone name" in done.stderr


def test_when_a_window_is_open_and_when_it_opens_next() -> None:
    day = SendWindow.from_settings(
        {"sendWindow": {"start": "09:00", "end": "21:00", "timezone": ZONE}}
    )
    night = SendWindow.from_settings(
        {"sendWindow": {"start": "21:00", "end": "06:00", "timezone": ZONE}}
    )
    assert day is not None and night is not None
    zone = ZoneInfo(ZONE)
    at = lambda h, m: datetime(2026, 12, 2, h, m, tzinfo=zone)  # noqa: E731
    assert day.next_open(at(9, 0)) is None and day.next_open(at(20, 59)) is None
    assert day.next_open(at(8, 59)) == at(9, 0)
    assert day.next_open(at(21, 0)) == at(9, 0) + timedelta(days=1)
    # 03:00 in Kolkata is 21:30 UTC the day before: the zone decides, not UTC.
    assert day.next_open(datetime(2026, 12, 1, 21, 30, tzinfo=UTC)) == at(9, 0)
    assert night.next_open(at(23, 0)) is None and night.next_open(at(5, 59)) is None
    assert night.next_open(at(6, 0)) == at(21, 0)


# --- waiting for the window with real workers -----------------------------------------------


def _opening_in(lead: float, minutes_open: int = 60) -> tuple[float, datetime, dict[str, Any]]:
    """A worker clock offset, the (worker-clock) time a window opens, and that window: it opens
    `lead` real seconds from now."""
    real = datetime.now(UTC)
    opens = (real + timedelta(hours=3)).replace(second=0, microsecond=0)
    offset = (opens - timedelta(seconds=lead) - real).total_seconds()
    local = opens.astimezone(ZoneInfo(ZONE))
    end = local + timedelta(minutes=minutes_open)
    window = {"start": local.strftime("%H:%M"), "end": end.strftime("%H:%M"), "timezone": ZONE}
    return offset, opens, window


async def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.1)


async def _status_is(execution_id: str, status: str) -> bool:
    return bool((await execution_row(execution_id))["status"] == status)


async def _waiting(execution_id: str) -> bool:
    return (await execution_row(execution_id))["send_resumes_at"] is not None


async def _queued(redis: ArqRedis) -> list[tuple[str, float]]:
    return [(k.decode(), s) for k, s in await redis.zrange(queue.RUN_QUEUE, 0, -1, withscores=True)]


async def _sent_rows(execution_id: str) -> list[dict[str, Any]]:
    return await SandboxMessage.select(SandboxMessage.created_at).where(
        SandboxMessage.execution_row.execution == UUID(execution_id)
    )


async def test_rows_outside_the_window_wait_as_a_deferred_job_survive_restart_and_flush_then_send(
    client: httpx.AsyncClient,
    api_key: str,
    admin_client: httpx.AsyncClient,
    redis: ArqRedis,
    workers: list[WorkerProcess],
) -> None:
    lead = 45.0
    offset, opens, window = _opening_in(lead)
    opens_real = opens - timedelta(seconds=offset)
    await save_workflow(_definition(window))
    env = {"FLOWGATE_CLOCK_OFFSET_SECONDS": repr(offset)}
    first = WorkerProcess(**env)
    workers.append(first)
    await first.ready()

    execution_id = await start(client, api_key, csv_data=rows(3), workflow_id=WORKFLOW_ID)
    await _until(lambda: _status_is(execution_id, "pending_approval"), 30, "pending approval")
    approved = await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve", json={}, headers=auth(api_key)
    )
    assert approved.status_code == 200
    await _until(lambda: _waiting(execution_id), 30, "waiting for the window")

    stored = await execution_row(execution_id)
    assert stored["status"] == "running" and stored["lease_token"] is None
    started_at = clock.iso(stored["started_at"])
    # The status endpoint is the spec's, unchanged.
    status = await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(api_key))
    assert status.json() == {
        "id": execution_id,
        "status": "running",
        "startedAt": started_at,
        "completedAt": None,
        "error": None,
        "approvalStatus": "approved",
    }
    # The results say when sending resumes.
    results = await client.get(f"{PUBLIC}/executions/{execution_id}/results", headers=auth(api_key))
    assert results.json() == {
        "id": execution_id,
        "status": "running",
        "output": None,
        "error": None,
        "startedAt": started_at,
        "completedAt": None,
        "sendingResumesAt": clock.iso(opens),
    }
    # One job, deferred to the opening (in wall-clock ms); no worker holds anything.
    job_id = queue.run_job_id(UUID(execution_id), 3, stored["run_attempt"])
    ((queued_id, score),) = await _queued(redis)
    assert queued_id == job_id
    assert abs(score - opens_real.timestamp() * 1000) <= 1
    assert await redis.keys("arq:in-progress:*") == []
    assert await _sent_rows(execution_id) == []
    page = await admin_client.get(f"/dashboard/executions/{execution_id}")
    assert "Outside the sending hours: sending resumes" in page.text
    assert opens.strftime("%Y-%m-%d %H:%M") + " UTC" in page.text
    assert "waiting for the sending hours" in page.text

    # The worker goes away, and Redis loses everything: a new worker's reconciler queues the
    # job again, still deferred to the opening.
    first.kill()
    await redis.flushdb()
    second = WorkerProcess(**env)
    workers.append(second)
    await second.ready()

    async def requeued() -> bool:
        return len(await _queued(redis)) == 1

    await _until(requeued, 20, "queued again by the reconciler")
    ((queued_id, score),) = await _queued(redis)
    assert queued_id == queue.run_job_id(UUID(execution_id), 3, stored["run_attempt"] + 1)
    assert abs(score - opens_real.timestamp() * 1000) <= 1
    # The reconciler logs after it queued: on a busy machine the line may come a moment later.
    logged = f"reconciler queued 1 execution(s) and 0 webhook event(s) again: {execution_id}"

    async def said_so() -> bool:
        return logged in second.log

    await _until(said_so, 10, "the reconciler's log line")
    assert (await execution_row(execution_id))["status"] == "running"
    assert await _sent_rows(execution_id) == []

    # The window opens: every row is sent, none before it.
    left = (opens_real - datetime.now(UTC)).total_seconds()
    assert left > 0, "the test was too slow to see the wait through"
    await _until(lambda: _status_is(execution_id, "completed"), left + 60, "completed")
    sent = await _sent_rows(execution_id)
    assert len(sent) == 3
    assert all(row["created_at"] >= opens_real - timedelta(seconds=0.5) for row in sent)
    results = await client.get(f"{PUBLIC}/executions/{execution_id}/results", headers=auth(api_key))
    body = results.json()
    assert "sendingResumesAt" not in body
    assert body["output"]["successCount"] == 3
    assert "Traceback" not in second.log


async def test_when_the_window_closes_mid_send_the_rest_waits_for_the_next_window(
    client: httpx.AsyncClient, api_key: str, redis: ArqRedis, workers: list[WorkerProcess]
) -> None:
    # The window closes `lead` seconds from now; sending 100 rows takes far longer.
    lead = 25.0
    real = datetime.now(UTC)
    closes = (real + timedelta(hours=3)).replace(second=0, microsecond=0)
    offset = (closes - timedelta(seconds=lead) - real).total_seconds()
    local = closes.astimezone(ZoneInfo(ZONE))
    opens = local - timedelta(hours=1)
    window = {"start": opens.strftime("%H:%M"), "end": local.strftime("%H:%M"), "timezone": ZONE}
    await save_workflow(_definition(window, batch_size=2))
    worker = WorkerProcess(
        FLOWGATE_CLOCK_OFFSET_SECONDS=repr(offset), FLOWGATE_SANDBOX_SEND_DELAY_SECONDS="0.3"
    )
    workers.append(worker)
    await worker.ready()

    execution_id = await start(client, api_key, csv_data=rows(100), workflow_id=WORKFLOW_ID)
    await _until(lambda: _status_is(execution_id, "pending_approval"), 30, "pending approval")
    approved = await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve", json={}, headers=auth(api_key)
    )
    assert approved.status_code == 200
    await _until(lambda: _waiting(execution_id), lead + 40, "waiting for the next window")

    closes_real = closes - timedelta(seconds=offset)
    sent = await _sent_rows(execution_id)
    assert 0 < len(sent) < 100
    # Nothing started after the close (a batch of 2 in flight finishes: 0.6 s).
    assert all(row["created_at"] < closes_real + timedelta(seconds=1) for row in sent)
    unsent = await ExecutionRow.count().where(
        (ExecutionRow.execution == UUID(execution_id)) & ExecutionRow.send_status.is_null()
    )
    assert unsent == 100 - len(sent)
    next_opening = opens + timedelta(days=1)
    results = await client.get(f"{PUBLIC}/executions/{execution_id}/results", headers=auth(api_key))
    assert results.json()["sendingResumesAt"] == clock.iso(next_opening)
    assert results.json()["status"] == "running"
    ((_, score),) = await _queued(redis)
    assert abs(score - (next_opening - timedelta(seconds=offset)).timestamp() * 1000) <= 1
