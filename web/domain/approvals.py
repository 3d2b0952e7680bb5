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

from web.domain import executions
from web.domain.errors import InvalidInput
from web.domain.statuses import ExecutionStatus
from web.domain.tables import Execution, ExecutionRow
from web.domain.workflows import approval_settings

REJECTED_REASON = "Rejected by reviewer"


async def approve(execution_id: UUID, comment: str | None, decided_by: str) -> int:
    """Approve; returns the step index the run resumes at. Conflict unless pending approval."""
    async with executions.db().transaction():
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
    async with executions.db().transaction():
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
        await executions.require_status(execution["id"], ExecutionStatus.PENDING_APPROVAL)
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
    settings = approval_settings(execution["definition"])
    if settings.get("requireComment") and not (comment and comment.strip()):
        raise InvalidInput("A comment is required for this approval")
