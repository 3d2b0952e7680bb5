"""Executions: start, read, and every status transition, in one place.

Each transition is one UPDATE guarded by the status it leaves (and, on the worker side, by the
lease token of the worker that runs it), so two processes can never both make the same move.
Imports only web.domain and Piccolo.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar, Literal
from uuid import UUID, uuid4

import msgspec
from asyncpg.exceptions import CheckViolationError
from piccolo.columns.combination import WhereRaw
from redis.asyncio import Redis

from web.domain import (
    approvers,
    audit,
    clock,
    idempotency,
    limits,
    list_pages,
    metrics,
    pool,
    queue,
    webhooks,
)
from web.domain.actors import Actor
from web.domain.api_keys import AuthenticatedKey
from web.domain.approvers import Approver
from web.domain.errors import Conflict, InvalidInput, NotFound
from web.domain.execution_rows import RowState, RowView
from web.domain.script_client import ScriptClient
from web.domain.statuses import SENDING, ExecutionStatus, SendStatus
from web.domain.tables import Execution, ExecutionRow
from web.domain.types import (
    Definition,
    ExecutionOutput,
    ReadModel,
    RowData,
    StepResult,
    from_row,
    json_text,
)
from web.domain.workflows import RunnableWorkflow

EXECUTION_NOT_FOUND = "Execution not found"  # public-api.md, "404 Not Found"


@dataclass(frozen=True)
class StartedExecution:
    id: UUID
    status: ExecutionStatus
    started_at: datetime
    quota: limits.QuotaState


@dataclass(frozen=True)
class Claim:
    """A worker's hold on a running execution: what it needs to run the next step."""

    id: UUID
    token: UUID
    current_step: int
    definition: Definition
    approval_status: str | None
    # Webhook events to queue now (the `execution.started` of a run that was pending).
    events: list[UUID]
    # The events the execution's key wanted when claimed (none without a webhook URL): a
    # transition to an event the key does not want needs no transaction (_transition).
    webhook_events: tuple[str, ...] = ()


def parse_execution_id(value: str) -> UUID:
    """A malformed id is as unknown as a missing one: 404, not 400."""
    try:
        return UUID(value)
    except (ValueError, AttributeError):
        raise NotFound(EXECUTION_NOT_FOUND) from None


def _nul_path(value: Any, path: str) -> str | None:
    """The path of the first string (key or value) holding U+0000, which PostgreSQL cannot store."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _nul_path(key, path) or _nul_path(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}[{index}]")
            if found:
                return found
    return None


def check_rows(rows: list[RowData], required_fields: tuple[str, ...]) -> None:
    """InvalidInput naming the first row field that is missing or empty."""
    for index, row in enumerate(rows):
        for field in required_fields:
            value = row.get(field)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise InvalidInput(f"input.csvData[{index}].{field} is required")


# One statement stores the execution (with the workflow's definition as it is now), its rows
# and counts the key's monthly quota: one round trip, its own transaction, nothing decoded or
# encoded in Python. The count comes last (it reads every stored row first), so the key's
# usage row is locked only until the commit. Past the limit, the table's check constraint
# `within_monthly_limit` fails the statement and nothing is written. No row returned means the
# workflow was deleted since the guard read it.
#
# The three parts, shared by both statements below. `{source}` is where the workflow row
# comes from: the workflow alone, or joined with the Idempotency-Key's claim.
_STARTED = """
    INSERT INTO execution (id, workflow, api_key, description, definition, status, row_count,
                           truncated_from, created_at, started_at, updated_at)
    SELECT $1, w.id, $3, $4, jsonb_build_object('id', w.id, 'name', w.name, 'steps', w.steps),
           'pending', $5, $6, $7, $7, $7
    FROM {source} WHERE w.id = $2
    RETURNING id
"""
# A row's id is a time-ordered UUID (version 7, RFC 9562): the statement's time in
# milliseconds, then gen_random_uuid()'s random bits, with the version nibble set from 4 to 7
# (bits 52 and 53 of the bytes). So one execute's 100 rows land together at the right edge of
# execution_row_pkey instead of on 100 random leaf pages of it: at ten million rows that index
# is 570 MB, and a 100-row insert read 170 pages and took 8-10 ms with random ids against 2-4
# pages and 2.5-2.9 ms with these (EXPLAIN ANALYZE on figure 9's database, bench/README.md).
_ROW_ID = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing "
    "substring(int8send((extract(epoch FROM now()) * 1000)::bigint) FROM 3) FROM 1 FOR 6), "
    "52, 1), 53, 1), 'hex')::uuid"
)
_STORED = (
    "\n    INSERT INTO execution_row (id, execution, position, data)\n"  # noqa: S608 (constants)
    f"    SELECT {_ROW_ID}, started.id, t.ordinality - 1, t.value\n"
    "    FROM started, jsonb_array_elements($8::jsonb) WITH ORDINALITY AS t\n"
    "    RETURNING execution\n"
)
_COUNTED = """
    INSERT INTO api_key_usage AS usage (id, api_key, month, used, monthly_limit)
    SELECT gen_random_uuid(), $3, $9, 1, $10 FROM (SELECT count(*) AS n FROM stored) AS s
    WHERE s.n > 0
    ON CONFLICT (api_key, month)
        DO UPDATE SET used = usage.used + 1, monthly_limit = EXCLUDED.monthly_limit
    RETURNING used
"""
INSERT_EXECUTION = (
    f"WITH started AS ({_STARTED.format(source='workflow AS w')}), stored AS ({_STORED}){_COUNTED}"
)

# The same with an Idempotency-Key, still one statement (one round trip, its own transaction):
# the answer, known before (the id and time are chosen here), is stored first, and the rest
# only runs if it was. `lock` is the twin check (web.domain.idempotency: a transaction-scoped
# advisory lock taken without waiting); `claim` inserts the answer, or replaces an expired one
# under the same key, and returns nothing when an unexpired one exists (or the workflow is
# gone). A twin that committed between this statement's snapshot and its lock is still seen:
# ON CONFLICT checks committed rows. A quota refusal fails the whole statement, answer included.
_LOCK_AND_CLAIM = """
WITH lock AS (
    SELECT pg_try_advisory_xact_lock($11) AS ok
), claim AS (
    INSERT INTO idempotent_request AS r
        (id, api_key, key, fingerprint, status_code, body, created_at, expires_at)
    SELECT gen_random_uuid(), $3, $12, $13, $14, $15, now(), now() + $16::interval
    FROM workflow AS w, lock WHERE w.id = $2 AND lock.ok
    ON CONFLICT (api_key, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
        status_code = EXCLUDED.status_code, body = EXCLUDED.body,
        created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
        WHERE r.expires_at <= now()
    RETURNING r.id
)"""
INSERT_EXECUTION_ONCE = (
    _LOCK_AND_CLAIM  # noqa: S608 (constant parts only, every value a $n parameter)
    + ", started AS ("
    + _STARTED.format(source="workflow AS w, claim")
    + "), stored AS ("
    + _STORED
    + "), counted AS ("
    + _COUNTED
    + ")\nSELECT (SELECT used FROM counted) AS used, (SELECT ok FROM lock) AS locked"
)


async def start_execution(
    redis: ScriptClient | Redis,
    key: AuthenticatedKey,
    workflow: RunnableWorkflow,
    csv_data: list[RowData],
    description: str | None,
    max_rows: int,
    on_counted: Callable[[limits.QuotaState], None] | None = None,
    once: idempotency.Once[StartedExecution] | None = None,
) -> StartedExecution:
    """Validate, store the execution with its rows and count the quota, in one statement
    (nothing is written when that raises), then queue the run. `on_counted` hears the quota
    as soon as it is counted, so the caller can report it even if the enqueue fails.

    With `once` (an Idempotency-Key), the same statement also stores the answer
    (INSERT_EXECUTION_ONCE), so the answer exists exactly when the execution does; a key
    answered before raises idempotency.Replayed (and nothing else happens), Conflict while a
    twin is in flight, idempotency.KeyReused for another request."""
    rows = csv_data[:max_rows]
    truncated_from = len(csv_data) if len(csv_data) > max_rows else None
    if not rows:
        raise InvalidInput("input.csvData must contain at least one row")
    encoded_rows = _encode_rows(rows)
    check_rows(rows, workflow.required_fields)
    if description is not None and "\x00" in description:
        raise InvalidInput("description contains a NUL character (\\u0000)")
    started_at = clock.now()
    resets_at = limits.next_month_start(started_at)
    execution_id = uuid4()
    async with pool.connection() as connection:
        used = await _insert_execution(
            connection,
            execution_id,
            key,
            workflow,
            description,
            rows,
            truncated_from,
            started_at,
            encoded_rows,
            once,
        )
    quota = limits.QuotaState(limit=key.monthly_limit, used=used, resets_at=resets_at)
    if on_counted is not None:
        on_counted(quota)
    metrics.execution_started(workflow.id)  # stored: it runs even if this enqueue fails
    await queue.enqueue_run(redis, execution_id)  # after the commit: the worker finds the rows
    return StartedExecution(
        id=execution_id, status=ExecutionStatus.PENDING, started_at=started_at, quota=quota
    )


async def _insert_execution(
    connection: pool.Connection,
    execution_id: UUID,
    key: AuthenticatedKey,
    workflow: RunnableWorkflow,
    description: str | None,
    rows: list[RowData],
    truncated_from: int | None,
    started_at: datetime,
    encoded_rows: str,
    once: idempotency.Once[StartedExecution] | None,
) -> int:
    """INSERT_EXECUTION (or _ONCE); the key's monthly usage with this one. QuotaExceeded past
    the limit (nothing written), NotFound when the workflow was deleted since the guard read
    it; with `once`, what idempotency.replay_or_refuse raises when the key was used before."""
    resets_at = limits.next_month_start(started_at)
    args: list[object] = [
        execution_id,
        workflow.id,
        key.id,
        description,
        len(rows),
        truncated_from,
        started_at,
        encoded_rows,
        limits.month_of(started_at),
        key.monthly_limit,
    ]
    if once is not None:
        quota = limits.QuotaState(limit=key.monthly_limit, used=0, resets_at=resets_at)
        answer = once.answer(
            StartedExecution(execution_id, ExecutionStatus.PENDING, started_at, quota)
        )
        call = once.call
        args += [call.lock_id, call.key, call.fingerprint]
        args += [answer.status_code, answer.body.decode(), call.ttl]
    if key.monthly_limit <= 0:
        raise limits.QuotaExceeded(limits.QuotaState(key.monthly_limit, 0, resets_at))
    try:
        if once is None:
            used = await connection.fetchval(INSERT_EXECUTION, *args)
        else:
            outcome = await connection.fetchrow(INSERT_EXECUTION_ONCE, *args)
            assert outcome is not None  # a SELECT without FROM: always one row
            used, locked = outcome["used"], outcome["locked"]
            if used is None:
                if not locked:
                    raise Conflict(idempotency.STILL_PROCESSING)
                await idempotency.replay_or_refuse(connection, once.call)
    except CheckViolationError as exc:
        if exc.constraint_name != limits.QUOTA_CONSTRAINT:
            raise
        full = limits.QuotaState(key.monthly_limit, key.monthly_limit, resets_at)
        raise limits.QuotaExceeded(full) from None
    if used is None:
        raise NotFound("Workflow not found")
    return int(used)


def _encode_rows(rows: list[RowData]) -> str:
    """The rows as JSON, refusing any string PostgreSQL cannot store (U+0000). The encoder
    writes U+0000 as the escape below, so only a body that has it needs the walk that finds
    the field to name (a literal backslash followed by "u0000" has it too, and passes)."""
    encoded = msgspec.json.encode(rows).decode()
    if "\\u0000" in encoded:
        found = _nul_path(rows, "input.csvData")
        if found:
            raise InvalidInput(f"{found} contains a NUL character (\\u0000)")
    return encoded


class ExecutionView(ReadModel, frozen=True):
    """An execution as the public API reads it; `output` and `definition` only when asked."""

    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("output", "definition")

    id: UUID
    workflow: str
    status: str
    approval_status: str | None
    row_count: int
    error: str | None
    started_at: datetime
    completed_at: datetime | None
    output: ExecutionOutput | None = None
    definition: Definition | None = None
    # While a send step waits for its sending hours: when it resumes (web.domain.send_window).
    send_resumes_at: datetime | None = None


async def get_for_key(
    execution_id: str | UUID,
    api_key_id: UUID,
    *,
    with_output: bool = False,
    with_definition: bool = False,
) -> ExecutionView:
    """The execution if it belongs to this key; NotFound otherwise (no leak of existence).
    `output` and `definition` (JSON) are read only when asked for."""
    uid = execution_id if isinstance(execution_id, UUID) else parse_execution_id(execution_id)
    columns = "id, workflow, status, approval_status, row_count, error, started_at, completed_at"
    if with_output:
        columns += ", output, send_resumes_at"
    if with_definition:
        columns += ", definition"
    row = await pool.fetch_row(
        f"SELECT {columns} FROM execution WHERE id = $1 AND api_key = $2",  # noqa: S608
        uid,
        api_key_id,
    )
    if row is None:
        raise NotFound(EXECUTION_NOT_FOUND)
    return from_row(row, ExecutionView)


class _DefinitionOnly(ReadModel, frozen=True):
    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("definition",)

    definition: Definition


async def get_definition(execution_id: UUID) -> Definition:
    """The workflow definition the execution runs with; NotFound if there is no execution."""
    row = await pool.fetch_row("SELECT definition FROM execution WHERE id = $1", execution_id)
    if row is None:
        raise NotFound(EXECUTION_NOT_FOUND)
    return from_row(row, _DefinitionOnly).definition


async def status_of(execution_id: UUID) -> str | None:
    row = await Execution.select(Execution.status).where(Execution.id == execution_id).first()
    return None if row is None else str(row["status"])


async def build_output(execution_id: UUID) -> ExecutionOutput:
    """public-api.md "Get Execution Results": counts and one result per row, in input order."""
    # Only the customerId of each row's data (JSONB text, decoded here), not the whole data.
    # The query builder, not the pool: reject and cancel call this inside their transaction,
    # after updating the rows, and must read those updates.
    rows = await ExecutionRow.raw(
        "SELECT data->'customerId' AS customer_id, send_status, message_id, error "
        "FROM execution_row WHERE execution = {} ORDER BY position",
        execution_id,
    )
    return _output(
        (
            None if row["customer_id"] is None else msgspec.json.decode(row["customer_id"]),
            row["send_status"],
            row["message_id"],
            row["error"],
        )
        for row in rows
    )


def output_of(rows: list[RowState]) -> ExecutionOutput:
    """build_output over rows already in hand (as the last step saved them), in input order."""
    return _output(
        (row.data.get("customerId"), row.send_status, row.message_id, row.error) for row in rows
    )


def _output(rows: Iterable[tuple[Any, str | None, str | None, str | None]]) -> ExecutionOutput:
    """(customerId, send status, message id, error) of each row, in input order."""
    results: list[dict[str, Any]] = []
    for customer_id, send_status, message_id, error in rows:
        result: dict[str, Any] = {
            "customerId": customer_id,
            "status": send_status or SendStatus.SKIPPED,
            "messageId": message_id,
        }
        if error:
            result["error" if send_status == SendStatus.FAILED else "reason"] = error
        results.append(result)
    return {
        "successCount": sum(1 for r in results if r["status"] == SendStatus.SENT),
        "failedCount": sum(1 for r in results if r["status"] == SendStatus.FAILED),
        "results": results,
    }


# --- worker-side transitions: each needs the lease token of the claim -----------------------
# Plain SQL with $n parameters (the query builder parsed each long template again on every
# call: about 4 % of a worker's drain, figure 5a): on the pool when a statement runs alone, on
# the engine transaction's connection when it runs with its webhook event.


_CLAIM = (
    "UPDATE execution AS e SET "
    "  status = 'running', lease_token = $1, send_resumes_at = NULL, "
    "  lease_expires_at = now() + make_interval(secs => $2), updated_at = now() "
)
_LEASE_FREE = "(e.lease_expires_at IS NULL OR e.lease_expires_at < now() OR e.lease_token = $1)"


def _unwanted(event: int) -> str:
    """The guard of a transition that skips the transaction: the key (now, in the statement
    itself) wants no event named by the statement's parameter number `event`, so none is due."""
    return (
        "NOT EXISTS (SELECT 1 FROM api_key AS k WHERE k.id = e.api_key "  # noqa: S608 (a number)
        f"AND k.webhook_url <> '' AND ${event} = ANY(k.webhook_events))"
    )


async def claim(execution_id: UUID, token: UUID, lease_seconds: float) -> Claim | None:
    """Take (or re-take) the run of an execution that is pending or running and not leased by a
    live worker. `pending` becomes `running` (and `execution.started` is recorded). None when
    there is nothing to claim.

    One statement when no event can come of it: a run already `running` (the claim after an
    approval, a job that goes on, a retry) or one whose key wants no `execution.started`. Else
    (and when the lease is held elsewhere) the claim and its event are one transaction."""
    returning = f"e.current_step, e.definition, {EVENT_COLUMNS}"
    found = await pool.fetch_rows(
        f"{_CLAIM} WHERE e.id = $3 AND {_LEASE_FREE} "
        f"  AND (e.status = 'running' OR (e.status = 'pending' AND {_unwanted(4)})) "
        f"RETURNING {returning}",
        token,
        lease_seconds,
        execution_id,
        webhooks.STARTED,
    )
    events: list[UUID] = []
    if found:
        row = found[0]
    else:
        async with pool.engine().transaction() as transaction:
            locked = await transaction.connection.fetch(
                f"{_CLAIM} "  # noqa: S608 (constants; values bound)
                "FROM (SELECT id, status FROM execution WHERE id = $3 FOR UPDATE) AS before "
                f"WHERE e.id = before.id AND e.status IN ('pending', 'running') AND {_LEASE_FREE} "
                f"RETURNING before.status AS previous_status, {returning}",
                token,
                lease_seconds,
                execution_id,
            )
            if not locked:
                return None
            row = dict(locked[0])
            if row["previous_status"] == ExecutionStatus.PENDING:
                events = await record_event(webhooks.STARTED, row)
    claimed = from_row(row, _Claimed)
    return Claim(
        id=execution_id,
        token=token,
        current_step=claimed.current_step,
        definition=claimed.definition,
        approval_status=claimed.approval_status,
        events=events,
        webhook_events=tuple(claimed.webhook_events or ()),
    )


class _Claimed(ReadModel, frozen=True):
    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("definition",)

    current_step: int
    definition: Definition
    approval_status: str | None
    webhook_events: list[str] | None  # EVENT_COLUMNS: NULL without a webhook URL


# What a webhook payload needs, as RETURNING columns of a transition of `execution AS e`.
# `webhook_events`: the events the execution's key wants, NULL without a webhook URL; read in
# the transition's own statement, so recording an event costs no query of the key.
EVENT_COLUMNS = (
    "e.id, e.workflow, e.api_key, e.status, e.started_at, e.completed_at, e.output, e.error, "
    "e.approval_status, (SELECT k.webhook_events FROM api_key AS k "
    "  WHERE k.id = e.api_key AND k.webhook_url <> '') AS webhook_events"
)


async def record_event(event: str, row: dict[str, Any]) -> list[UUID]:
    """Inside a transition's transaction: `event` for the execution `row` (EVENT_COLUMNS) if
    its key wants it; the events to queue after the commit."""
    new = await webhooks.record_event(event, from_row(row, webhooks.EventSource))
    return [new.id] if new is not None and new.queue_now else []


async def transition_alone(
    claim: Claim, event: str, sql: str, *args: Any, returning: str = EVENT_COLUMNS
) -> dict[str, Any] | None:
    """A worker's transition (`sql`: a guarded UPDATE of `execution AS e`, its values bound to
    $1...) as one statement, when the claim saw that the key does not want `event` and the
    caller has nothing else to record with it: no transaction, so no BEGIN and COMMIT round
    trips. Its row (`returning`), or None: the key wanted the event at the claim, or wants it
    now (checked in the statement), or the guard matched nothing. The caller then runs the
    transition in a transaction with its event, which records it (or finds nothing)."""
    if event in claim.webhook_events:
        return None
    guard = _unwanted(len(args) + 1)
    rows = await pool.fetch_rows(f"{sql} AND {guard} RETURNING {returning}", *args, event)
    return rows[0] if rows else None


async def _transition(claim: Claim, event: str, sql: str, *args: Any) -> list[UUID] | None:
    """Run one guarded UPDATE of `execution AS e` (`sql`, its values bound to $1...) and record
    its webhook event in the same transaction (or alone: transition_alone). None if the guard
    matched nothing; else the events to queue now."""
    alone = await transition_alone(claim, event, sql, *args)
    if alone is not None:
        metrics.execution_ended(alone)  # after the commit; final statuses only
        return []
    events: list[UUID] | None = None
    async with pool.engine().transaction() as transaction:
        found = await transaction.connection.fetch(f"{sql} RETURNING {EVENT_COLUMNS}", *args)
        if found:
            row = dict(found[0])
            events = await record_event(event, row)
    if found:
        metrics.execution_ended(row)
    return events


async def renew_lease(claim: Claim, lease_seconds: float) -> str | None:
    """Renew this worker's lease; the execution's status (`running`, or `cancelled` when it was
    cancelled meanwhile: the worker stops taking rows and winds up), None if the lease is lost."""
    rows = await pool.fetch_rows(
        "UPDATE execution SET lease_expires_at = now() + make_interval(secs => $1) "
        "WHERE id = $2 AND lease_token = $3 AND status IN ('running', 'cancelled') "
        "RETURNING status",
        lease_seconds,
        claim.id,
        claim.token,
    )
    return str(rows[0]["status"]) if rows else None


async def finish_step(claim: Claim, index: int, result: StepResult, lease_seconds: float) -> bool:
    """Record step `index` as done and move on; False if this worker lost its claim."""
    rows = await pool.fetch_rows(
        "UPDATE execution SET current_step = $1 + 1, "
        "  step_results = step_results || jsonb_build_array($2::jsonb), "
        "  lease_expires_at = now() + make_interval(secs => $3), updated_at = now() "
        "WHERE id = $4 AND lease_token = $5 AND status = 'running' AND current_step = $1 "
        "RETURNING id",
        index,
        json_text(result),
        lease_seconds,
        claim.id,
        claim.token,
    )
    return bool(rows)


_COMPLETE = (
    "UPDATE execution AS e SET status = 'completed', output = $1::jsonb, "
    "  completed_at = now(), lease_token = NULL, lease_expires_at = NULL, updated_at = now() "
)
_AS_CLAIMED = "WHERE id = $2 AND lease_token = $3 AND status = 'running'"


async def complete(
    claim: Claim,
    last_step: tuple[int, StepResult] | None = None,
    rows: list[RowState] | None = None,
) -> list[UUID] | None:
    """The run is done: its output saved, from `rows` when the last step handed them on (as it
    saved them) or else read, and with `last_step` (its index and result) recorded in the same
    statement, as finish_step would have. None if this worker lost its claim (nothing saved)."""
    output = json_text(output_of(rows) if rows is not None else await build_output(claim.id))
    if last_step is None:
        return await _transition(
            claim, webhooks.COMPLETED, f"{_COMPLETE} {_AS_CLAIMED}", output, claim.id, claim.token
        )
    index, result = last_step
    return await _transition(
        claim,
        webhooks.COMPLETED,
        f"{_COMPLETE}, current_step = $4 + 1, "
        "  step_results = step_results || jsonb_build_array($5::jsonb) "
        f"{_AS_CLAIMED} AND current_step = $4",
        output,
        claim.id,
        claim.token,
        index,
        json_text(result),
    )


async def fail(claim: Claim, error: str) -> list[UUID] | None:
    return await _transition(
        claim,
        webhooks.FAILED,
        "UPDATE execution AS e SET status = 'failed', error = $1, completed_at = now(), "
        "  lease_token = NULL, lease_expires_at = NULL, updated_at = now() "
        "WHERE id = $2 AND lease_token = $3 AND status = 'running'",
        error,
        claim.id,
        claim.token,
    )


async def lease_remaining(execution_id: UUID) -> float:
    rows = await pool.fetch_rows(
        "SELECT GREATEST(EXTRACT(EPOCH FROM lease_expires_at - now()), 0) AS left "
        "FROM execution WHERE id = $1",
        execution_id,
    )
    return float(rows[0]["left"] or 0) if rows else 0.0


async def hand_on(claim: Claim) -> tuple[int, int] | None:
    """Give the lease back and count one more run attempt: the job stops with its step saved
    so far but unfinished, for a new job (id from the step and attempt returned) to go on.
    None if this worker no longer holds the run."""
    rows = await Execution.raw(
        "UPDATE execution SET lease_token = NULL, lease_expires_at = NULL, "
        "  run_attempt = run_attempt + 1, updated_at = now() "
        "WHERE id = {} AND lease_token = {} AND status = 'running' "
        "RETURNING current_step, run_attempt",
        claim.id,
        claim.token,
    )
    return (int(rows[0]["current_step"]), int(rows[0]["run_attempt"])) if rows else None


async def wait_for_window(claim: Claim, resumes_at: datetime) -> tuple[int, int] | None:
    """Like hand_on, for a send step outside its sending hours: the execution stays `running`,
    records when sending resumes (`send_resumes_at`, shown by the results and the detail page)
    and its next job is deferred to then (web.domain.queue). None if this worker no longer
    holds the run."""
    rows = await Execution.raw(
        "UPDATE execution SET lease_token = NULL, lease_expires_at = NULL, "
        "  run_attempt = run_attempt + 1, send_resumes_at = {}, updated_at = now() "
        "WHERE id = {} AND lease_token = {} AND status = 'running' "
        "RETURNING current_step, run_attempt",
        resumes_at,
        claim.id,
        claim.token,
    )
    return (int(rows[0]["current_step"]), int(rows[0]["run_attempt"])) if rows else None


CANCELLED_REASON = "Execution cancelled"  # the result of every row a cancel left unsent


async def cancel_execution(
    redis: ScriptClient | Redis,
    execution_id: UUID,
    api_key_id: UUID,
    comment: str | None,
    actor: Actor,
    *,
    once: idempotency.Once[UUID] | None = None,
) -> None:
    """Stop an execution that is `pending`, `running` or `pending_approval`: it ends
    `cancelled` now (completedAt set, error null, approvalStatus `rejected` if it was pending),
    every row not handed to the provider ends `cancelled`, and `execution.cancelled` is sent.
    A worker running it stops taking rows at its next heartbeat, lets the calls in flight
    finish (a message the provider took stays `sent`) and writes the final results
    (`finish_cancelled`). NotFound (another key's too), Conflict from a final status."""
    if comment is not None and "\x00" in comment:
        raise InvalidInput("comment contains a NUL character (\\u0000)")
    async with pool.engine().transaction() as transaction:
        await idempotency.begin(transaction.connection, once)
        rows = await Execution.raw(CANCEL_SQL, actor.decided_by, comment, execution_id, api_key_id)
        if not rows:
            current = await get_for_key(execution_id, api_key_id)  # NotFound if not this key's
            raise Conflict(f"Execution is already {current.status}: it cannot be cancelled")
        worked_on = bool(rows[0]["worked_on"])
        output = await _settle_cancelled_rows(execution_id, in_flight_too=not worked_on)
        events = await record_event(webhooks.CANCELLED, rows[0])
        await audit.record(
            actor,
            "execution.cancelled",
            "execution",
            execution_id,
            execution_id=execution_id,
            before={"status": rows[0]["previous_status"]},
            after={"status": "cancelled"},
            comment=comment,
        )
        await idempotency.finish(transaction.connection, once, execution_id)
    # A worker running it writes the final results itself (finish_cancelled counts those rows).
    metrics.execution_ended(rows[0], output=None if worked_on else output)
    for event_id in events:
        await queue.enqueue_webhook(redis, event_id)  # after the commit


# The guarded UPDATE of a cancel. `worked_on`: a worker holds a live lease (it winds up itself).
_CANCEL = (
    "UPDATE execution AS e SET status = 'cancelled', completed_at = now(), updated_at = now(), "
    "  error = NULL, "
    "  approval_status = CASE WHEN e.approval_status = 'pending' THEN 'rejected' "
    "    ELSE e.approval_status END, "
    "  approval_decided_by = CASE WHEN e.approval_status = 'pending' THEN {} "
    "    ELSE e.approval_decided_by END, "
    "  approval_decided_at = CASE WHEN e.approval_status = 'pending' THEN now() "
    "    ELSE e.approval_decided_at END, "
    "  approval_comment = COALESCE({}, e.approval_comment) "
    "FROM (SELECT id, status, lease_expires_at > now() AS live FROM execution WHERE id = {} "
    "  FOR UPDATE) AS before "
    "WHERE e.id = before.id AND e.api_key = {} "
    "  AND e.status IN ('pending', 'running', 'pending_approval') "
    "RETURNING COALESCE(before.live, false) AS worked_on, before.status AS previous_status, "
)
CANCEL_SQL = _CANCEL + EVENT_COLUMNS


async def _settle_cancelled_rows(execution_id: UUID, *, in_flight_too: bool) -> ExecutionOutput:
    """Rows never handed to a provider end `cancelled`; with `in_flight_too` (no live worker
    holds the run), a row left `sending` by a dead one ends as the crash path says (its
    delivery is unknown). Then the results are written again."""
    await ExecutionRow.raw(
        "UPDATE execution_row SET send_status = 'cancelled', error = {} "
        "WHERE execution = {} AND send_status IS NULL",
        CANCELLED_REASON,
        execution_id,
    )
    if in_flight_too:
        await ExecutionRow.raw(
            "UPDATE execution_row SET send_status = 'failed', error = {} "
            "WHERE execution = {} AND send_status = {}",
            CANCELLED_UNKNOWN_DELIVERY,
            execution_id,
            SENDING,
        )
    output = await build_output(execution_id)
    await Execution.raw(
        "UPDATE execution SET output = {}::jsonb WHERE id = {}", json.dumps(output), execution_id
    )
    return output


CANCELLED_UNKNOWN_DELIVERY = (
    "Delivery state unknown: the execution was cancelled while this message was being sent; "
    "not resent to avoid a duplicate"
)


async def finish_cancelled(claim: Claim) -> None:
    """The worker of a run cancelled under it, once the calls in flight are saved: the rows it
    did not get to end `cancelled`, the results are written again, the lease is given back."""
    async with pool.engine().transaction():
        rows = await Execution.raw(
            "UPDATE execution SET lease_token = NULL, lease_expires_at = NULL "
            "WHERE id = {} AND lease_token = {} AND status = 'cancelled' RETURNING workflow",
            claim.id,
            claim.token,
        )
        output = await _settle_cancelled_rows(claim.id, in_flight_too=True) if rows else None
    if rows and output is not None:
        metrics.rows_finished(str(rows[0]["workflow"]), output)


async def release(claim: Claim) -> None:
    """Give the lease back early (a step hit a transient error and will be retried)."""
    await Execution.raw(
        "UPDATE execution SET lease_token = NULL, lease_expires_at = NULL "
        "WHERE id = {} AND lease_token = {}",
        claim.id,
        claim.token,
    )


async def require_status(execution_id: UUID, expected: ExecutionStatus) -> None:
    """After a guarded UPDATE matched nothing: NotFound or Conflict, whichever is true."""
    status = await status_of(execution_id)
    if status is None:
        raise NotFound(EXECUTION_NOT_FOUND)
    if status != expected:
        raise not_in_status(expected, status)


def not_in_status(expected: ExecutionStatus, status: str) -> Conflict:
    return Conflict(f"Execution is not {expected.replace('_', ' ')} (status: {status})")


# --- reading for the dashboard --------------------------------------------------------------


@dataclass(frozen=True)
class ExecutionFilters:
    status: str | None = None
    workflow: str | None = None
    api_key: UUID | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None


class ExecutionListEntry(ReadModel, frozen=True):
    """One line of the executions list."""

    id: UUID
    workflow: str
    key_name: str
    status: str
    approval_status: str | None
    row_count: int
    created_at: datetime
    completed_at: datetime | None


_LIST_COLUMNS = (
    "e.id, e.workflow, k.name AS key_name, e.status, e.approval_status, e.row_count, "
    "e.created_at, e.completed_at"
)


@dataclass(frozen=True)
class _ListQuery:
    """The SQL of one executions list: its filters' conditions, their values ($1…$n), and
    `lead`, the filter whose index a page walks (status, workflow or api_key; each has
    execution_<lead>_created, (lead, created_at DESC, id DESC))."""

    conditions: tuple[str, ...]
    args: tuple[object, ...]
    lead: str | None

    @classmethod
    def of(cls, filters: ExecutionFilters, viewer: Approver) -> _ListQuery:
        conditions: list[str] = []
        args: list[object] = []

        def condition(sql: str, *values: object) -> None:
            args.extend(values)
            first = len(args) - len(values) + 1
            conditions.append(sql.format(*(f"${first + i}" for i in range(len(values)))))

        lead: str | None = None
        for column, value in (
            ("status", filters.status),
            ("workflow", filters.workflow),
            ("api_key", filters.api_key),
        ):
            if not value:
                continue
            if lead is None:  # `= ANY`: see page()
                lead = column
                condition(f"e.{column} = ANY({{}})", [value])
            else:
                condition(f"e.{column} = {{}}", value)
        if filters.created_from:
            condition("e.created_at >= {}", filters.created_from)
        if filters.created_before:
            condition("e.created_at < {}", filters.created_before)
        if not viewer.is_admin:  # admins see everything: no condition at all
            condition(approvers.may_see_sql("{}", "e.definition"), list(viewer.groups))
        return cls(tuple(conditions), tuple(args), lead)

    def _where(self, extra: str | None = None) -> str:
        # Only the fixed conditions above are joined in; every value is a $n parameter.
        parts = [*self.conditions, *([extra] if extra else [])]
        return ("WHERE " + " AND ".join(parts)) if parts else ""

    def page(self, keyset: Literal["<", ">"] | None = None) -> str:
        """A page: the first (newest first), or the one older ("<", newest first) or newer
        (">", oldest first) than the position in the two parameters after the filters'
        values; the LIMIT is the parameter after those. Its ids come from one index alone, an
        index-only scan of LIMIT entries, and only those executions are then read, with their
        key's name.

        The inner ORDER BY starts with the lead filter's column, written as `= ANY(array)`,
        so only that filter's index yields the order without a sort. Written as `lead = $1`,
        the planner drops the column from the ORDER BY and may walk execution_created_id from
        the newest and filter instead, which reads every newer execution of another status,
        workflow or key first: after a burst of 3,000 new pending executions the
        ?status=completed page read 3,000 entries for 50 (tests/test_large_lists.py, figure 9).
        """
        n = len(self.args)
        where = self._where(keyset and f"(e.created_at, e.id) {keyset} (${n + 1}, ${n + 2})")
        limit = n + (3 if keyset else 1)
        order, lead_order = ("", " DESC") if keyset == ">" else ("DESC", "")
        keys = f"e.created_at {order}, e.id {order}"
        lead = f"e.{self.lead}{lead_order}, " if self.lead else ""
        return (
            f"SELECT {_LIST_COLUMNS} FROM (SELECT e.id, e.created_at FROM execution e {where} "  # noqa: S608
            f"ORDER BY {lead}{keys} LIMIT ${limit}) AS p "
            "JOIN execution e ON e.id = p.id JOIN api_key k ON k.id = e.api_key "
            f"ORDER BY p.created_at {order}, p.id {order}"
        )

    def count(self) -> str:
        """How many match, up to the LIMIT parameter after the filters' values."""
        return (
            f"SELECT count(*) FROM (SELECT 1 FROM execution e {self._where()} "  # noqa: S608
            f"LIMIT ${len(self.args) + 1}) AS s"
        )


async def list_executions(
    filters: ExecutionFilters,
    per_page: int,
    older: list_pages.Position | None = None,
    newer: list_pages.Position | None = None,
    *,
    viewer: Approver,
) -> list_pages.Page[ExecutionListEntry]:
    """One page of the executions `viewer` may see, newest first: the first, or the one just
    older than `older`, or just newer than `newer`; with the positions of its older/newer links
    and how many match (capped at list_pages.COUNT_CAP). Every filter and page is LIMIT n
    entries of one index (execution_created_id, _status_created, _workflow_created,
    _api_key_created: _ListQuery.page); for a non-admin, the approverGroups rule filters the
    entries that index walks (approvers.may_see_sql), so a page and the count hide the same
    executions."""
    query = _ListQuery.of(filters, viewer)
    async with pool.connection() as connection:
        records = None
        has_newer = older_exists = False
        if newer is not None:
            found = await connection.fetch(
                query.page(">"),
                *query.args,
                newer.created_at,
                newer.id,
                per_page + 1,
            )
            if len(found) > per_page:  # not yet back at the first page
                records = list(reversed(found[:per_page]))
                has_newer = True
                older_exists = True
        elif older is not None:
            found = await connection.fetch(
                query.page("<"),
                *query.args,
                older.created_at,
                older.id,
                per_page + 1,
            )
            records = found[:per_page]
            has_newer = True
            older_exists = len(found) > per_page
        if records is None:
            found = await connection.fetch(query.page(), *query.args, per_page + 1)
            records = found[:per_page]
            older_exists = len(found) > per_page
        total = await list_pages.capped_count(
            connection, query.count(), *query.args, list_pages.COUNT_CAP + 1
        )
    entries = [from_row(dict(record), ExecutionListEntry) for record in records]
    return list_pages.Page(
        entries=entries,
        older=_position(entries[-1]) if entries and older_exists else None,
        # An empty page (what was older than its link got deleted meanwhile) still links back.
        newer=(_position(entries[0]) if entries else older) if has_newer else None,
        total=total,
    )


def _position(entry: ExecutionListEntry) -> list_pages.Position:
    return list_pages.Position(created_at=entry.created_at, id=entry.id)


class ExecutionDetail(ReadModel, frozen=True):
    """Everything the dashboard shows about one execution (all but the lease token)."""

    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("definition", "step_results", "output")

    id: UUID
    workflow: str
    api_key: UUID
    key_name: str
    description: str | None
    definition: Definition
    status: str
    approval_status: str | None
    approval_comment: str | None
    approval_decided_by: str | None
    approval_decided_at: datetime | None
    row_count: int
    truncated_from: int | None
    current_step: int
    step_results: list[StepResult]
    output: ExecutionOutput | None
    error: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    started_at: datetime
    completed_at: datetime | None
    updated_at: datetime
    approval_deadline: datetime | None = None
    # While the send step waits for its sending hours: when sending resumes.
    send_resumes_at: datetime | None = None
    # When the retention policy removed the personal data (web.domain.retention).
    personal_data_purged_at: datetime | None = None


async def get_detail(execution_id: UUID, *, viewer: Approver) -> ExecutionDetail:
    """Everything the dashboard shows about one execution; NotFound if there is none, and the
    same NotFound if `viewer` may not see it (outside its approverGroups), so whether it exists
    does not show."""
    query = Execution.select(
        *Execution.all_columns(exclude=[Execution.lease_token]),
        Execution.api_key.name.as_alias("key_name"),
    ).where(Execution.id == execution_id)
    if not viewer.is_admin:
        seen = approvers.may_see_sql("{}", '"execution"."definition"')
        query = query.where(WhereRaw(seen, list(viewer.groups)))
    row = await query.first()
    if row is None:
        raise NotFound(EXECUTION_NOT_FOUND)
    return from_row(row, ExecutionDetail)


async def list_rows(execution_id: UUID) -> list[RowView]:
    rows = (
        await ExecutionRow.select()
        .where(ExecutionRow.execution == execution_id)
        .order_by(ExecutionRow.position)
    )
    return [from_row(row, RowView) for row in rows]


# --- counts for the admin pages -------------------------------------------------------------


class DayCount(msgspec.Struct, frozen=True):
    """How many executions a key started on one UTC day."""

    day: date
    count: int


async def executions_per_day(api_key_id: UUID, days: int = 30) -> list[DayCount]:
    """Executions the key started on each of the last `days` UTC days (today included), oldest
    first, days without any as 0. One GROUP BY query."""
    today = clock.now().astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time(), tzinfo=UTC)
    rows = await Execution.raw(
        "SELECT date_trunc('day', created_at AT TIME ZONE 'UTC') AS day, count(*) AS count "
        "FROM execution WHERE api_key = {} AND created_at >= {} AND created_at < {} "
        "GROUP BY 1",
        api_key_id,
        start,
        start + timedelta(days=days),
    )
    counts = {row["day"].date(): int(row["count"]) for row in rows}
    return [
        DayCount(day=day, count=counts.get(day, 0))
        for day in (first + timedelta(days=offset) for offset in range(days))
    ]
