"""Approve or reject an execution waiting at its approval step.

Approving marks every undecided row approved and hands the run back to the worker (the caller
enqueues it at the returned step). Rejecting ends the execution as `cancelled` with every row
`rejected`. Both are one transaction guarded by `status = 'pending_approval'`, so a second
decision on the same execution is refused instead of silently overwriting the first.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from web.domain import clock, compliance, executions, pool
from web.domain.errors import Conflict, InvalidInput, NotFound
from web.domain.statuses import ExecutionStatus, RowDecision
from web.domain.tables import Execution, ExecutionRow
from web.domain.workflows import approval_settings, step_settings

REJECTED_REASON = "Rejected by reviewer"


async def approve(execution_id: UUID, comment: str | None, decided_by: str) -> int:
    """Approve; returns the step index the run resumes at. Conflict unless pending approval."""
    async with pool.engine().transaction():
        rows = await Execution.raw(
            "UPDATE execution SET status = 'running', approval_status = 'approved', "
            "  approval_comment = {}, approval_decided_by = {}, approval_decided_at = now(), "
            "  updated_at = now() "
            "WHERE id = {} AND status = 'pending_approval' RETURNING current_step",
            comment,
            decided_by,
            execution_id,
        )
        if not rows:
            await executions.require_status(execution_id, ExecutionStatus.PENDING_APPROVAL)
        await ExecutionRow.raw(
            "UPDATE execution_row SET decision = 'approved' "
            "WHERE execution = {} AND decision IS NULL",
            execution_id,
        )
    return int(rows[0]["current_step"])


async def reject(execution_id: UUID, comment: str | None, decided_by: str) -> None:
    """Reject and stop: `cancelled`, approvalStatus `rejected`, every row `rejected`."""
    async with pool.engine().transaction():
        rows = await Execution.raw(
            "UPDATE execution SET status = 'cancelled', approval_status = 'rejected', "
            "  approval_comment = {}, approval_decided_by = {}, approval_decided_at = now(), "
            "  completed_at = now(), updated_at = now() "
            "WHERE id = {} AND status = 'pending_approval' RETURNING id",
            comment,
            decided_by,
            execution_id,
        )
        if not rows:
            await executions.require_status(execution_id, ExecutionStatus.PENDING_APPROVAL)
        await ExecutionRow.raw(
            "UPDATE execution_row SET decision = COALESCE(decision, 'rejected'), "
            "  send_status = 'rejected', error = {} WHERE execution = {}",
            REJECTED_REASON,
            execution_id,
        )
        output = await executions.build_output(execution_id)
        await Execution.raw(
            "UPDATE execution SET output = {}::jsonb WHERE id = {}",
            json.dumps(output),
            execution_id,
        )


async def pending_approval_data(execution: dict[str, Any]) -> dict[str, Any]:
    """public-api.md "Get Pending Approval Data": rows through the step's displayFields."""
    if execution["status"] != ExecutionStatus.PENDING_APPROVAL:
        raise executions.not_in_status(ExecutionStatus.PENDING_APPROVAL, execution["status"])
    settings = approval_settings(execution["definition"])
    fields: list[str] = list(settings.get("displayFields") or [])
    rows = (
        await ExecutionRow.select(
            ExecutionRow.data,
            ExecutionRow.generated_content,
            ExecutionRow.compliance_status,
        )
        .where(ExecutionRow.execution == execution["id"])
        .order_by(ExecutionRow.position)
        .output(load_json=True)
    )
    shown = []
    for row in rows:
        values = {
            **row["data"],
            "generated_content": row["generated_content"],
            "compliance_status": row["compliance_status"],
        }
        shown.append({field: values.get(field) for field in fields} if fields else values)
    return {
        "rows": shown,
        "metadata": {
            "totalRows": len(shown),
            "title": settings.get("title", "Review"),
            "description": settings.get("description", ""),
            "allowBulkApproval": bool(settings.get("allowBulkApproval", True)),
            "requireComment": bool(settings.get("requireComment", False)),
        },
        "displayFields": fields,
    }


def check_comment(execution: dict[str, Any], comment: str | None) -> None:
    """InvalidInput when the approval step has requireComment and no comment was given."""
    if comment and "\x00" in comment:
        raise InvalidInput("comment contains a NUL character (\\u0000)")
    settings = approval_settings(execution["definition"])
    if settings.get("requireComment") and not (comment and comment.strip()):
        raise InvalidInput("A comment is required for this approval")


# --- row by row, for the review screen ------------------------------------------------------


async def queue() -> list[dict[str, Any]]:
    """Executions waiting for approval, oldest first, with their row counts."""
    rows: list[dict[str, Any]] = await Execution.raw(
        "SELECT e.id, e.workflow, e.created_at, e.updated_at, k.name AS key_name, "
        "  e.row_count, "
        "  COUNT(r.id) FILTER (WHERE r.compliance_status = 'failed') AS failing, "
        "  COUNT(r.id) FILTER (WHERE r.decision IS NOT NULL) AS decided "
        "FROM execution e JOIN api_key k ON k.id = e.api_key "
        "LEFT JOIN execution_row r ON r.execution = e.id "
        "WHERE e.status = 'pending_approval' "
        "GROUP BY e.id, k.name ORDER BY e.created_at"
    )
    return rows


async def _lock_pending(execution_id: UUID) -> dict[str, Any]:
    """Inside a transaction: the execution, share-locked, if it still waits for approval.
    `approve`/`reject` update the same row, so a decision can never land after them."""
    rows = await Execution.raw(
        "SELECT id, status, approval_decided_by, definition FROM execution WHERE id = {} FOR SHARE",
        execution_id,
    )
    if not rows:
        raise NotFound(executions.EXECUTION_NOT_FOUND)
    row: dict[str, Any] = rows[0]
    if row["status"] != ExecutionStatus.PENDING_APPROVAL:
        by = f" by {row['approval_decided_by']}" if row["approval_decided_by"] else ""
        raise Conflict(f"This execution is no longer waiting for approval: it was decided{by}")
    return row


async def _row(execution_id: UUID, row_id: UUID) -> dict[str, Any]:
    row = (
        await ExecutionRow.select()
        .where(ExecutionRow.id == row_id, ExecutionRow.execution == execution_id)
        .output(load_json=True)
        .first()
    )
    if row is None:
        raise NotFound("Row not found")
    result: dict[str, Any] = row
    return result


def _check_decision(decision: str) -> RowDecision:
    try:
        return RowDecision(decision)
    except ValueError:
        raise InvalidInput("Decision must be approved or rejected") from None


async def decide_row(
    execution_id: UUID, row_id: UUID, decision: str, seen: str | None, decided_by: str
) -> dict[str, Any]:
    """Save one row's decision at once. `seen` is the decision the reviewer saw ("" for none):
    if someone else changed it meanwhile, Conflict instead of a silent overwrite."""
    checked = _check_decision(decision)
    async with pool.engine().transaction():
        await _lock_pending(execution_id)
        current = await _row(execution_id, row_id)
        if (current["decision"] or "") != (seen or ""):
            who = current["decided_by"] or "another reviewer"
            raise Conflict(
                f"{who} changed this row meanwhile (it is now {current['decision'] or 'undecided'})"
            )
        await ExecutionRow.update(
            {
                ExecutionRow.decision: checked,
                ExecutionRow.decided_by: decided_by,
                ExecutionRow.decided_at: clock.now(),
            }
        ).where(ExecutionRow.id == row_id)
    return await _row(execution_id, row_id)


async def decide_all(execution_id: UUID, decision: str, decided_by: str) -> int:
    """Bulk decision (only when the approval step allows it): every row gets `decision`."""
    checked = _check_decision(decision)
    async with pool.engine().transaction():
        execution = await _lock_pending(execution_id)
        if not approval_settings(executions.json_column(execution["definition"])).get(
            "allowBulkApproval", True
        ):
            raise Conflict("This workflow does not allow bulk approval")
        rows = await ExecutionRow.raw(
            "UPDATE execution_row SET decision = {}, decided_by = {}, decided_at = now() "
            "WHERE execution = {} RETURNING id",
            str(checked),
            decided_by,
            execution_id,
        )
    return len(rows)


async def edit_row(
    execution_id: UUID, row_id: UUID, content: str, edited_by: str
) -> dict[str, Any]:
    """Replace a row's generated message before approval; the first original is kept and the
    new text is checked for compliance again with the workflow's own rules."""
    content = content.strip()
    if not content:
        raise InvalidInput("The message cannot be empty")
    if "\x00" in content:
        raise InvalidInput("The message contains a NUL character")
    async with pool.engine().transaction():
        execution = await _lock_pending(execution_id)
        row = await _row(execution_id, row_id)
        rules = step_settings(executions.json_column(execution["definition"]), "compliance_check")
        verdict = compliance.check(rules, row["data"], content)
        await ExecutionRow.update(
            {
                ExecutionRow.original_content: row["original_content"] or row["generated_content"],
                ExecutionRow.generated_content: content,
                ExecutionRow.compliance_status: str(verdict.status),
                ExecutionRow.compliance_reasons: verdict.reasons,
                ExecutionRow.edited_by: edited_by,
                ExecutionRow.edited_at: clock.now(),
            }
        ).where(ExecutionRow.id == row_id)
    return await _row(execution_id, row_id)
