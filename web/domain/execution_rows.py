"""The per-row state of executions: what the steps read and save, in batches.

Batch writes are single statements over unnest()ed arrays, so a step saves all of its rows at
once and a crash leaves either all or none of a batch written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from web.domain.statuses import SendStatus
from web.domain.tables import ExecutionRow


@dataclass(frozen=True)
class RowState:
    id: UUID
    position: int
    data: dict[str, Any]
    generated_content: str | None
    compliance_status: str | None
    compliance_reasons: list[str]
    decision: str | None
    send_status: str | None
    message_id: str | None


async def load(execution_id: UUID) -> list[RowState]:
    rows = (
        await ExecutionRow.select(
            ExecutionRow.id,
            ExecutionRow.position,
            ExecutionRow.data,
            ExecutionRow.generated_content,
            ExecutionRow.compliance_status,
            ExecutionRow.compliance_reasons,
            ExecutionRow.decision,
            ExecutionRow.send_status,
            ExecutionRow.message_id,
        )
        .where(ExecutionRow.execution == execution_id)
        .order_by(ExecutionRow.position)
        .output(load_json=True)
    )
    return [RowState(**row) for row in rows]


async def save_generated(items: list[tuple[UUID, str | None, str | None]]) -> None:
    """(row id, generated content, error) for each row."""
    if not items:
        return
    ids, contents, errors = zip(*items, strict=True)
    await ExecutionRow.raw(
        "UPDATE execution_row AS r SET generated_content = v.content, error = v.error "
        "FROM unnest({}::uuid[], {}::text[], {}::text[]) AS v(id, content, error) "
        "WHERE r.id = v.id",
        list(ids),
        list(contents),
        list(errors),
    )


async def save_compliance(items: list[tuple[UUID, str, list[str]]]) -> None:
    """(row id, compliance status, reasons) for each row."""
    if not items:
        return
    await ExecutionRow.raw(
        "UPDATE execution_row AS r SET compliance_status = v.status, "
        "  compliance_reasons = v.reasons::jsonb "
        "FROM unnest({}::uuid[], {}::text[], {}::text[]) AS v(id, status, reasons) "
        "WHERE r.id = v.id",
        [item[0] for item in items],
        [item[1] for item in items],
        [json.dumps(item[2]) for item in items],
    )


async def save_send_results(items: list[tuple[UUID, SendStatus, str | None, str | None]]) -> None:
    """(row id, send status, message id, error) for each row. A row already `sent` is never
    overwritten: its message went out, whatever a later attempt says."""
    if not items:
        return
    await ExecutionRow.raw(
        "UPDATE execution_row AS r SET send_status = v.status, message_id = v.message_id, "
        "  error = v.error, sent_at = CASE WHEN v.status = 'sent' THEN now() END "
        "FROM unnest({}::uuid[], {}::text[], {}::text[], {}::text[]) "
        "  AS v(id, status, message_id, error) "
        "WHERE r.id = v.id AND r.send_status IS DISTINCT FROM 'sent'",
        [item[0] for item in items],
        [str(item[1]) for item in items],
        [item[2] for item in items],
        [item[3] for item in items],
    )
