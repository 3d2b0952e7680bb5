"""Approvals: the queue, and the review screen where each row is approved, rejected or edited
(saved at once, one row swapped by HTMX) before the decisions are submitted."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from arq.connections import ArqRedis
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.plugins.flash import flash
from litestar.response import Template

from web.dashboard.auth import back_to, current_user, is_htmx, page, require_user
from web.domain import approvals, executions, queue
from web.domain.errors import Conflict
from web.domain.statuses import ExecutionStatus
from web.domain.workflows import approval_settings

BASE = "/dashboard/approvals"


def _review_context(execution: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    settings = approval_settings(execution["definition"])
    fields = [
        f
        for f in settings.get("displayFields") or ["customerId", "name", "phone"]
        if f not in ("generated_content", "compliance_status")
    ]
    decided = [r for r in rows if r["decision"]]
    return {
        "execution": execution,
        "rows": rows,
        "fields": fields,
        "settings": settings,
        "waiting": execution["status"] == ExecutionStatus.PENDING_APPROVAL,
        "counts": {
            "approved": sum(1 for r in decided if r["decision"] == "approved"),
            "rejected": sum(1 for r in decided if r["decision"] == "rejected"),
            "undecided": len(rows) - len(decided),
            "failing": sum(1 for r in rows if r["compliance_status"] == "failed"),
        },
    }


class ApprovalsController(Controller):
    path = BASE
    guards = [require_user]
    include_in_schema = False

    @get("/")
    async def queue_page(self, request: Request[Any, Any, Any]) -> Template:
        return page(request, "approvals/queue.html", waiting=await approvals.queue())

    @get("/{execution_id:uuid}")
    async def review(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[UUID],
        editing: FromQuery[UUID | None] = None,
    ) -> Template:
        execution = await executions.get_detail(execution_id)
        rows = await executions.list_rows(execution_id)
        return page(
            request,
            "approvals/review.html",
            editing=editing,
            **_review_context(execution, rows),
        )

    async def _row_response(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[UUID],
        row_id: FromPath[UUID],
        error: str | None = None,
        editing: bool = False,
    ) -> Response[Any]:
        if not is_htmx(request):
            suffix = f"?editing={row_id}" if editing else ""
            return back_to(request, f"{BASE}/{execution_id}{suffix}#row-{row_id}")
        execution = await executions.get_detail(execution_id)
        rows = await executions.list_rows(execution_id)  # the counts above the table need all
        row = next(r for r in rows if r["id"] == row_id)
        return page(
            request,
            "approvals/_row_update.html",
            row=row,
            error=error,
            editing=row_id if editing else None,
            **_review_context(execution, rows),
        )

    @post("/{execution_id:uuid}/rows/{row_id:uuid}/decision")
    async def decide(
        self, request: Request[Any, Any, Any], execution_id: FromPath[UUID], row_id: FromPath[UUID]
    ) -> Response[Any]:
        form = await request.form()
        user = current_user(request)
        try:
            await approvals.decide_row(
                execution_id,
                row_id,
                str(form.get("decision", "")),
                str(form.get("seen", "")),
                user.email,
            )
        except Conflict as exc:
            if not is_htmx(request):
                raise
            return await self._row_response(request, execution_id, row_id, error=exc.message)
        return await self._row_response(request, execution_id, row_id)

    @get("/{execution_id:uuid}/rows/{row_id:uuid}/edit")
    async def edit_form(
        self, request: Request[Any, Any, Any], execution_id: FromPath[UUID], row_id: FromPath[UUID]
    ) -> Response[Any]:
        return await self._row_response(request, execution_id, row_id, editing=True)

    @get("/{execution_id:uuid}/rows/{row_id:uuid}")
    async def row(
        self, request: Request[Any, Any, Any], execution_id: FromPath[UUID], row_id: FromPath[UUID]
    ) -> Response[Any]:
        return await self._row_response(request, execution_id, row_id)

    @post("/{execution_id:uuid}/rows/{row_id:uuid}/edit")
    async def edit(
        self, request: Request[Any, Any, Any], execution_id: FromPath[UUID], row_id: FromPath[UUID]
    ) -> Response[Any]:
        form = await request.form()
        try:
            await approvals.edit_row(
                execution_id, row_id, str(form.get("content", "")), current_user(request).email
            )
        except Conflict as exc:
            if not is_htmx(request):
                raise
            return await self._row_response(request, execution_id, row_id, error=exc.message)
        return await self._row_response(request, execution_id, row_id)

    @post("/{execution_id:uuid}/rows/decision")
    async def decide_all(
        self, request: Request[Any, Any, Any], execution_id: FromPath[UUID]
    ) -> Response[Any]:
        form = await request.form()
        decision = str(form.get("decision", ""))
        count = await approvals.decide_all(execution_id, decision, current_user(request).email)
        flash(request, f"{count} rows {decision}", category="success")
        return back_to(request, f"{BASE}/{execution_id}")

    @post("/{execution_id:uuid}/submit")
    async def submit(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[UUID],
        arq: NamedDependency[ArqRedis],
    ) -> Response[Any]:
        """Approve the execution with the row decisions made (undecided rows count as approved,
        as with the public API's approve) and resume the run."""
        form = await request.form()
        comment = str(form.get("comment", "")).strip() or None
        execution = await executions.get_detail(execution_id)
        approvals.check_comment(execution, comment)
        step = await approvals.approve(execution_id, comment, current_user(request).email)
        await queue.enqueue_run(arq, execution_id, step)
        flash(request, "Approved: the approved rows are being sent", category="success")
        return back_to(request, f"/dashboard/executions/{execution_id}")

    @post("/{execution_id:uuid}/reject")
    async def reject(
        self, request: Request[Any, Any, Any], execution_id: FromPath[UUID]
    ) -> Response[Any]:
        form = await request.form()
        comment = str(form.get("comment", "")).strip() or None
        execution = await executions.get_detail(execution_id)
        approvals.check_comment(execution, comment)
        await approvals.reject(execution_id, comment, current_user(request).email)
        flash(
            request, "Rejected: the execution is cancelled and nothing is sent", category="success"
        )
        return back_to(request, f"/dashboard/executions/{execution_id}")
