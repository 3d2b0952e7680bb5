"""The per-row state of executions: what the steps read and save, in batches.

Batch writes are single statements over unnest()ed arrays, so a step saves all of its rows at
once and a crash leaves either all or none of a batch written.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar
from uuid import UUID

from web.domain import pool
from web.domain.statuses import SENDING, SendStatus
from web.domain.tables import ExecutionRow
from web.domain.types import ReadModel, RowData, TokenUsage, from_row, json_text


class RowView(ReadModel, frozen=True):
    """One row with everything that happened to it, as the dashboard shows it."""

    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("data", "compliance_reasons", "content_usage")

    id: UUID
    execution: UUID
    position: int
    data: RowData
    generated_content: str | None
    original_content: str | None
    compliance_status: str | None
    compliance_reasons: list[str]
    decision: str | None
    decided_by: str | None
    decided_at: datetime | None
    edited_by: str | None
    edited_at: datetime | None
    content_usage: TokenUsage | None
    send_status: str | None
    message_id: str | None
    error: str | None
    sent_at: datetime | None
    # What WhatsApp reported since (web.domain.delivery_statuses); None until a status arrives.
    delivery_status: str | None = None
    delivery_error: str | None = None
    decision_reason: str | None = None  # a rejected row's reason, as the reviewer gave it


class RowState(ReadModel, frozen=True):
    """One row as the steps read it."""

    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("data", "compliance_reasons", "content_usage")

    id: UUID
    position: int
    data: RowData
    generated_content: str | None
    compliance_status: str | None
    compliance_reasons: list[str]
    decision: str | None
    send_status: str | None
    message_id: str | None
    error: str | None
    content_usage: TokenUsage | None = None
    decision_reason: str | None = None  # a rejected row's reason, as the reviewer gave it


# Plain SQL on the pool, and decoded by msgspec (from_row): the query builder's own per-row JSON
# decoding was the biggest single cost of a step's read (bench/README.md, figure 5), and its
# statement building a measurable share of each batch write.
_LOAD = (
    "SELECT id, position, data, generated_content, compliance_status, compliance_reasons, "
    "  decision, send_status, message_id, error, content_usage, decision_reason "
    "FROM execution_row WHERE execution = $1 ORDER BY position"
)


async def load(execution_id: UUID) -> list[RowState]:
    return [from_row(row, RowState) for row in await pool.fetch_rows(_LOAD, execution_id)]


async def save_generated(
    items: list[tuple[UUID, str | None, str | None, TokenUsage | None]],
) -> None:
    """(row id, generated content, error, provider token usage) for each row."""
    if not items:
        return
    await pool.execute(
        "UPDATE execution_row AS r SET generated_content = v.content, error = v.error, "
        "  content_usage = v.usage::jsonb "
        "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) "
        "  AS v(id, content, error, usage) "
        "WHERE r.id = v.id",
        [item[0] for item in items],
        [item[1] for item in items],
        [item[2] for item in items],
        [None if item[3] is None else json_text(item[3]) for item in items],
    )


async def save_compliance(items: list[tuple[UUID, str, list[str]]]) -> None:
    """(row id, compliance status, reasons) for each row."""
    if not items:
        return
    await pool.execute(
        "UPDATE execution_row AS r SET compliance_status = v.status, "
        "  compliance_reasons = v.reasons::jsonb "
        "FROM unnest($1::uuid[], $2::text[], $3::text[]) AS v(id, status, reasons) "
        "WHERE r.id = v.id",
        [item[0] for item in items],
        [item[1] for item in items],
        [json_text(item[2]) for item in items],
    )


async def save_send_results(items: list[tuple[UUID, SendStatus, str | None, str | None]]) -> None:
    """(row id, send status, message id, error) for each row. A row already `sent` is never
    overwritten: its message went out, whatever a later attempt says."""
    if not items:
        return
    await pool.execute(
        "UPDATE execution_row AS r SET send_status = v.status, message_id = v.message_id, "
        "  error = v.error, sent_at = CASE WHEN v.status = 'sent' THEN now() END "
        "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) "
        "  AS v(id, status, message_id, error) "
        "WHERE r.id = v.id AND r.send_status IS DISTINCT FROM 'sent'",
        [item[0] for item in items],
        [str(item[1]) for item in items],
        [item[2] for item in items],
        [item[3] for item in items],
    )


async def mark_sending(row_id: UUID) -> bool:
    """Claim a row for one call to an HTTP messaging provider, committed before the call.
    False when the row is no longer unsent (another worker took it): then it is not sent."""
    rows = await ExecutionRow.raw(
        "UPDATE execution_row SET send_status = {} "
        "WHERE id = {} AND send_status IS NULL RETURNING id",
        SENDING,
        row_id,
    )
    return bool(rows)


async def fail_unfinished_sends(execution_id: UUID, error: str) -> int:
    """Rows left `sending` by a worker that died mid-call become `failed` with `error`: whether
    the provider delivered them is unknown, and sending again could deliver twice."""
    rows = await ExecutionRow.raw(
        "UPDATE execution_row SET send_status = {}, error = {} "
        "WHERE execution = {} AND send_status = {} RETURNING id",
        str(SendStatus.FAILED),
        error,
        execution_id,
        SENDING,
    )
    return len(rows)
