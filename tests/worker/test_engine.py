"""The step loop: status moves, failures, re-runs, and every queue name registered."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import socket
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
from arq import Retry
from arq.connections import ArqRedis

from tests.factories import PUBLIC, auth, execution_row, row_states, rows, start
from web.domain import compliance, executions, queue, recovery, suppressions
from web.domain.tables import SandboxMessage, Workflow
from web.domain.workflows import BFSI_TEMPLATE, save_workflow
from web.settings import get_settings
from worker import engine, jobs
from worker.settings import DeliverySettings, WorkerSettings
from worker.steps import RUNNERS
from worker.steps.context import StepContext, StepRunner


def test_every_job_name_in_the_queue_is_registered_in_the_worker() -> None:
    registered = {
        function.name: settings.queue_name
        for settings in (WorkerSettings, DeliverySettings)
        for function in settings.functions
    }
    assert set(queue.JOB_NAMES) <= set(registered)
    # Each job is served by the loop of the queue its enqueue helper uses.
    assert registered[queue.RUN_EXECUTION] == queue.RUN_QUEUE
    assert registered[queue.DELIVER_WEBHOOK] == queue.WEBHOOK_QUEUE
    # The purges are cron jobs of the runs' loop, registered under the queue's names.
    crons = {job.name for job in WorkerSettings.cron_jobs}
    assert {f"cron:{name}" for name in queue.CRON_JOB_NAMES} == crons


async def _workflow(workflow_id: str, **step_settings: dict[str, object]) -> str:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = workflow_id
    for step in definition["steps"]:
        step["settings"].update(step_settings.get(step["type"], {}))
    await save_workflow(definition)
    return workflow_id


async def test_a_step_that_raises_fails_the_execution_with_a_readable_error(
    client: httpx.AsyncClient, api_key: str, run_worker
) -> None:
    workflow_id = await _workflow(
        "workflow_broken", generate_content={"template": "Hi {{ name | no_such_filter }}"}
    )
    execution_id = await start(client, api_key, csv_data=rows(2), workflow_id=workflow_id)

    await run_worker()

    status = (
        await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(api_key))
    ).json()
    assert status["status"] == "failed"
    assert status["error"] == (
        "Step 1 (Generate personalised message) failed: settings.template is not a valid "
        "template: No filter named 'no_such_filter'."
    )
    assert status["completedAt"] is not None
    stored = await execution_row(execution_id)
    assert stored["lease_token"] is None


async def test_an_unknown_provider_fails_the_execution_instead_of_hanging(
    client: httpx.AsyncClient, api_key: str, run_worker
) -> None:
    # Imports refuse such a definition (tests/test_workflow_files.py); one stored before that
    # check existed, or written to the table directly, must still fail cleanly at run time.
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["steps"][3]["settings"]["provider"] = "carrier_pigeon"
    await Workflow.insert(
        Workflow(id="workflow_odd", name="Odd", steps=definition["steps"], required_fields=[])
    )
    workflow_id = "workflow_odd"
    execution_id = await start(client, api_key, csv_data=rows(1), workflow_id=workflow_id)
    await run_worker()
    await client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key))
    await run_worker()

    stored = await execution_row(execution_id)
    assert stored["status"] == "failed"
    assert stored["error"] == (
        "Step 4 (Send WhatsApp message) failed: Unknown messaging provider 'carrier_pigeon'"
    )


async def test_running_a_finished_execution_again_changes_nothing(
    client: httpx.AsyncClient, api_key: str, run_worker, redis: ArqRedis
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(3))
    await run_worker()
    await client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key))
    await run_worker()
    before = await execution_row(execution_id)

    async with httpx.AsyncClient() as http:
        outcome = await engine.run_execution(UUID(execution_id), get_settings(), http, redis)

    assert outcome.state == "nothing to do (completed)"
    assert await execution_row(execution_id) == before
    assert await SandboxMessage.count() == 3


async def test_a_run_waiting_for_approval_is_not_resumed_by_a_stray_job(
    client: httpx.AsyncClient, api_key: str, run_worker, redis: ArqRedis
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(1))
    await run_worker()

    async with httpx.AsyncClient() as http:
        outcome = await engine.run_execution(UUID(execution_id), get_settings(), http, redis)

    assert outcome.state == "nothing to do (pending_approval)"
    assert (await execution_row(execution_id))["status"] == "pending_approval"


async def test_a_second_worker_waits_while_the_first_holds_the_lease(
    client: httpx.AsyncClient, api_key: str, redis: ArqRedis
) -> None:
    execution_id = UUID(await start(client, api_key, csv_data=rows(1)))
    first = await executions.claim(execution_id, uuid4(), lease_seconds=30)
    assert first is not None
    assert (await execution_row(execution_id))["status"] == "running"  # it was pending

    async with httpx.AsyncClient() as http:
        outcome = await engine.run_execution(execution_id, get_settings(), http, redis)

    assert outcome.state == "busy"
    assert outcome.retry_after is not None and 25 < outcome.retry_after <= 30


async def test_a_heartbeat_keeps_a_short_lease_while_a_step_works_without_renewing_it(
    client: httpx.AsyncClient, api_key: str, redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def one_long_call(ctx: StepContext) -> dict[str, Any]:
        await asyncio.sleep(2)  # four leases long, and the step itself never renews
        return {"generated": 0, "failed": 0}

    monkeypatch.setitem(RUNNERS, "generate_content", one_long_call)
    settings = dataclasses.replace(get_settings(), execution_lease_seconds=0.5)
    execution_id = UUID(await start(client, api_key, csv_data=rows(1)))

    async with httpx.AsyncClient() as http:
        first = asyncio.create_task(engine.run_execution(execution_id, settings, http, redis))
        others = []
        while not first.done():
            await asyncio.sleep(0.1)
            others.append(await engine.run_execution(execution_id, settings, http, redis))
        outcome = await first

    assert outcome.state == "pending_approval"
    # Another job tried all along and never got the run: the lease never lapsed.
    assert len(others) >= 10
    assert {other.state for other in others[:-1]} == {"busy"}
    assert [s["type"] for s in (await execution_row(execution_id))["step_results"]] == [
        "generate_content",
        "compliance_check",
    ]


async def test_an_expired_lease_is_taken_over_and_the_run_resumes_from_the_saved_step(
    client: httpx.AsyncClient, api_key: str, run_worker
) -> None:
    execution_id = UUID(await start(client, api_key, csv_data=rows(2)))
    dead = await executions.claim(execution_id, uuid4(), lease_seconds=0.01)
    assert dead is not None
    # The "dead" worker had finished the first step before it went away.
    await executions.finish_step(dead, 0, {"index": 0, "type": "generate_content"}, 0.01)

    await run_worker()

    stored = await execution_row(execution_id)
    assert stored["status"] == "pending_approval"
    assert [s["type"] for s in stored["step_results"]] == [
        "generate_content",
        "compliance_check",
    ]
    # The content step was not run again: the rows have no content, so they fail compliance.
    assert [s["compliance_status"] for s in await row_states(str(execution_id))] == [
        "failed",
        "failed",
    ]


@pytest.mark.parametrize("rows_count", [1, 100])
async def test_status_moves_pending_running_pending_approval_running_completed(
    client: httpx.AsyncClient, api_key: str, run_worker, rows_count: int
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(rows_count))
    assert (await execution_row(execution_id))["status"] == "pending"
    await run_worker()
    assert (await execution_row(execution_id))["status"] == "pending_approval"
    await client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key))
    assert (await execution_row(execution_id))["status"] == "running"
    await run_worker()
    stored = await execution_row(execution_id)
    assert stored["status"] == "completed"
    assert stored["output"]["successCount"] == rows_count
    assert len(stored["output"]["results"]) == rows_count


def _refused_port() -> int:
    """A local port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _read_a_missing_file(ctx: StepContext) -> dict[str, Any]:
    with open("/nonexistent/flowgate/template.txt") as missing:
        return {"read": len(missing.read())}


async def _call_a_refusing_port_raw(ctx: StepContext) -> dict[str, Any]:
    await asyncio.open_connection("127.0.0.1", REFUSED_PORT)
    return {}


async def _time_out(ctx: StepContext) -> dict[str, Any]:
    async with asyncio.timeout(0.01):
        await asyncio.sleep(5)
    return {}


REFUSED_PORT = _refused_port()


@pytest.mark.parametrize(
    ("step", "error"),
    [
        (
            _read_a_missing_file,
            "[Errno 2] No such file or directory: '/nonexistent/flowgate/template.txt'",
        ),
        (
            _call_a_refusing_port_raw,
            f"[Errno 111] Connect call failed ('127.0.0.1', {REFUSED_PORT})",
        ),
        (_time_out, "TimeoutError"),
    ],
    ids=["FileNotFoundError", "ConnectionRefusedError", "TimeoutError"],
)
async def test_a_step_whose_own_code_raises_oserror_fails_the_execution_and_is_not_queued_again(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker,
    redis: ArqRedis,
    monkeypatch: pytest.MonkeyPatch,
    step: StepRunner,
    error: str,
) -> None:
    # OSError and TimeoutError are "PostgreSQL or Redis is down" only when the database or Redis
    # client raised them; a step's own are its failure, not a reason to retry for ever.
    monkeypatch.setitem(RUNNERS, "generate_content", step)
    execution_id = await start(client, api_key, csv_data=rows(2))

    async with asyncio.timeout(60):  # retried as an outage, the job would back off for minutes
        await run_worker()

    status = (
        await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(api_key))
    ).json()
    assert status["status"] == "failed"
    assert status["error"] == f"Step 1 (Generate personalised message) failed: {error}"
    assert await redis.zcard("arq:queue") == 0
    requeued = await recovery.requeue_stalled(redis, stalled_after=0)
    assert requeued.executions == []


async def test_a_database_that_cannot_be_reached_from_a_step_leaves_the_run_to_a_retry(
    client: httpx.AsyncClient, api_key: str, redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def reach_a_database_that_is_down(ctx: StepContext) -> dict[str, Any]:
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{REFUSED_PORT}/flowgate")
        return {}

    monkeypatch.setitem(RUNNERS, "generate_content", reach_a_database_that_is_down)
    execution_id = await start(client, api_key, csv_data=rows(1))

    async with httpx.AsyncClient() as http:
        context = {"settings": get_settings(), "http": http, "redis": redis, "job_try": 1}
        with pytest.raises(Retry):
            await jobs.run_execution(context, execution_id)

    stored = await execution_row(execution_id)
    assert (stored["status"], stored["error"], stored["current_step"]) == ("running", None, 0)


async def test_compliance_in_the_same_job_checks_what_generation_saved_opt_outs_included(
    client: httpx.AsyncClient, api_key: str, run_worker
) -> None:
    # generate_content hands its rows on to compliance_check instead of their being read again:
    # what compliance decided must still be exactly what it would decide over the saved rows.
    data = rows(3)
    data[2]["city"] = "risk-free"  # its message names the city: a banned phrase
    await suppressions.add(data[1]["phone"], None, suppressions.Source.CLI)
    execution_id = await start(client, api_key, csv_data=data)

    await run_worker()

    stored = await row_states(execution_id)
    assert [(r["compliance_status"], r["send_status"]) for r in stored] == [
        ("passed", None),
        ("failed", "skipped"),
        ("failed", None),
    ]
    assert stored[1]["generated_content"] is None
    assert stored[1]["compliance_reasons"][0] == suppressions.OPTED_OUT
    assert "Visit your nearest risk-free branch" in stored[2]["generated_content"]
    assert stored[2]["compliance_reasons"] == ["Contains banned phrase: 'risk-free'"]
    settings = BFSI_TEMPLATE["steps"][1]["settings"]
    for row in stored:
        verdict = compliance.check(settings, row["data"], row["generated_content"])
        assert row["compliance_status"] == verdict.status
        assert row["compliance_reasons"] == [
            *([row["error"]] if row["error"] else []),
            *verdict.reasons,
        ]
    steps = (await execution_row(execution_id))["step_results"]
    assert {k: steps[0][k] for k in ("generated", "failed", "opted_out")} == {
        "generated": 2,
        "failed": 0,
        "opted_out": 1,
    }
    assert {k: steps[1][k] for k in ("passed", "failed")} == {"passed": 1, "failed": 2}


async def test_a_template_that_cannot_render_one_rows_value_fails_that_row_not_the_run(
    client: httpx.AsyncClient, api_key: str, run_worker
) -> None:
    workflow_id = await _workflow(
        "workflow_per_score",
        generate_content={"template": "Hi {{ name }}, {{ 100 // (credit_score | int) }} points"},
    )
    data = rows(2)
    data[0]["credit_score"], data[1]["credit_score"] = "50", "0"
    execution_id = await start(client, api_key, csv_data=data, workflow_id=workflow_id)

    await run_worker()

    assert (await execution_row(execution_id))["status"] == "pending_approval"
    first, second = await row_states(execution_id)
    assert first["generated_content"] == f"Hi {data[0]['name']}, 2 points"
    assert second["generated_content"] is None
    assert second["error"] == "Content generation failed: integer division or modulo by zero"
    assert second["compliance_status"] == "failed"
