"""Approvals: the queue, and the review screen where each row is approved, rejected or edited
(saved at once, one row swapped by HTMX) before the decisions are submitted.

Handlers parse the form, call one function of web.domain.approvals and shape the answer. A
row action that fails shows its message inside that row: the HTMX answer is the row itself,
and a plain form post is redirected to the row with the message kept for it in the session.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any
from uuid import UUID

from arq.connections import ArqRedis
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.plugins.flash import flash
from litestar.response import Template

from web.dashboard.auth import approver_of, back_to, is_htmx, page, require_user
from web.domain import approvals, executions, list_pages, text_diff
from web.domain.errors import Conflict, DomainError, InvalidInput, NotFound
from web.domain.execution_rows import RowView
from web.domain.statuses import ExecutionStatus

BASE = "/dashboard/approvals"
PER_PAGE = 50
# The session key of a row action's error after a plain form post: [row id, message].
ROW_ERROR = "approvals_row_error"


def _review_context(
    execution: executions.ExecutionDetail,
    rows: list[RowView],
    tab: str = approvals.DEFAULT_TAB,
    received: list[approvals.ApprovalProgress] | None = None,
) -> dict[str, Any]:
    rules = approvals.approval_rules(execution.definition)
    # The message and its compliance status have columns of their own.
    fields = [
        f
        for f in approvals.shown_fields(rules, [r.data for r in rows])
        if f not in approvals.ROW_EXTRAS
    ]
    return {
        "execution": execution,
        "rows": rows,
        "fields": fields,
        "rules": rules,
        "waiting": execution.status == ExecutionStatus.PENDING_APPROVAL,
        "received": received or [],
        "counts": approvals.review_counts(rows),
        "tab": tab,
        "tabs": approvals.TABS,
        "diffs": {
            r.id: text_diff.word_diff(r.original_content, r.generated_content or "")
            for r in rows
            if r.original_content is not None
        },
        "skipped_because": {
            r.id: approvals.skipped_because(r) for r in rows if approvals.fails_compliance(r)
        },
    }


def _tab(value: str | None) -> str:
    """The `show` filter: one of approvals.TABS; anything else shows every row."""
    return value if value in approvals.TABS else approvals.DEFAULT_TAB


def _review_url(execution_id: UUID, tab: str, *, editing: UUID | None = None) -> str:
    query = [f"show={tab}"] if tab != approvals.DEFAULT_TAB else []
    if editing is not None:
        query.append(f"editing={editing}")
    return f"{BASE}/{execution_id}" + (f"?{'&'.join(query)}" if query else "")


def _withdrawn_notice(withdrawn: list[str]) -> str | None:
    """What the reviewer whose change withdrew earlier approvals is told (None: it withdrew
    none)."""
    if not withdrawn:
        return None
    return (
        f"Earlier approvals withdrawn ({', '.join(withdrawn)}): they were given before your "
        "change, so they no longer count and the execution needs its approvals again"
    )


def _pop_row_error(request: Request[Any, Any, Any]) -> dict[str, str]:
    """{row id: message} of the row action that failed just before this page was asked for."""
    if "session" not in request.scope or not request.session:
        return {}
    kept = request.session.pop(ROW_ERROR, None)
    return {str(kept[0]): str(kept[1])} if kept else {}


class ApprovalsController(Controller):
    path = BASE
    guards = [require_user]
    include_in_schema = False

    @get("/")
    async def queue_page(
        self,
        request: Request[Any, Any, Any],
        older: FromQuery[str | None] = None,
        newer: FromQuery[str | None] = None,
    ) -> Template:
        listed = await approvals.list_waiting(
            approver_of(request),
            PER_PAGE,
            older=list_pages.decode_position(older, "older"),
            newer=list_pages.decode_position(newer, "newer"),
        )
        return page(
            request,
            "approvals/queue.html",
            waiting=listed.entries,
            total=listed.total,
            older=listed.older.encode() if listed.older else None,
            newer=listed.newer.encode() if listed.newer else None,
        )

    @get("/{execution_id:uuid}")
    async def review(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[UUID],
        editing: FromQuery[UUID | None] = None,
        show: FromQuery[str | None] = None,
    ) -> Template:
        """The review screen; `show` picks a triage tab (approvals.TABS), without JavaScript
        too: the tabs are links."""
        # Outside the approverGroups the execution is not for this reviewer to see: 404.
        execution = await executions.get_detail(execution_id, viewer=approver_of(request))
        rows = await executions.list_rows(execution_id)
        tab = _tab(show)
        return page(
            request,
            "approvals/review.html",
            editing=editing,
            row_errors=_pop_row_error(request),
            shown_rows=[r for r in rows if approvals.in_tab(r, tab)],
            **_review_context(
                execution, rows, tab, await approvals.approvals_received(execution_id)
            ),
        )

    async def _row_response(
        self,
        request: Request[Any, Any, Any],
        execution_id: UUID,
        row_id: UUID,
        error: str | None = None,
        editing: bool = False,
        tab: str = approvals.DEFAULT_TAB,
        notice: str | None = None,
    ) -> Response[Any]:
        """The row after an action: the row and the summary (HTMX, with `notice` and the
        approvals' progress swapped in out of band), or a redirect to the review screen (the
        notice flashed on it)."""
        if not is_htmx(request):
            if error is not None:
                request.session[ROW_ERROR] = [str(row_id), error]
            if notice is not None:
                flash(request, notice, category="warning")
            url = _review_url(execution_id, tab, editing=row_id if editing else None)
            return back_to(request, f"{url}#row-{row_id}")
        execution = await executions.get_detail(execution_id, viewer=approver_of(request))
        rows = await executions.list_rows(execution_id)  # the counts above the table need all
        row = next((r for r in rows if r.id == row_id), None)
        if row is None:
            raise NotFound("Row not found")
        received = await approvals.approvals_received(execution_id) if notice else None
        return page(
            request,
            "approvals/_row_update.html",
            row=row,
            error=error,
            editing=row_id if editing else None,
            notice=notice,
            **_review_context(execution, rows, tab, received),
        )

    async def _row_action(
        self,
        request: Request[Any, Any, Any],
        execution_id: UUID,
        row_id: UUID,
        action: Awaitable[approvals.RowChange],
        shown_in_row: tuple[type[DomainError], ...],
        editing_on_error: bool = False,
        tab: str = approvals.DEFAULT_TAB,
    ) -> Response[Any]:
        """Run a row action; an error of `shown_in_row` is drawn inside the row."""
        try:
            change = await action
        except shown_in_row as exc:
            return await self._row_response(
                request, execution_id, row_id, exc.message, editing_on_error, tab
            )
        notice = _withdrawn_notice(change.withdrawn)
        return await self._row_response(request, execution_id, row_id, tab=tab, notice=notice)

    @post("/{execution_id:uuid}/rows/{row_id:uuid}/decision")
    async def decide(
        self, request: Request[Any, Any, Any], execution_id: FromPath[UUID], row_id: FromPath[UUID]
    ) -> Response[Any]:
        form = await request.form()
        decision = str(form.get("decision", ""))
        # A decision other than the form's buttons is a bad request, not a row's problem.
        approvals.parse_row_decision(decision)
        action = approvals.decide_row(
            execution_id,
            row_id,
            decision,
            str(form.get("seen", "")),
            approver_of(request),
            reason=str(form.get("reason", "")),
        )
        tab = _tab(str(form.get("show", "")))
        return await self._row_action(
            request, execution_id, row_id, action, (Conflict, InvalidInput), tab=tab
        )

    @get("/{execution_id:uuid}/rows/{row_id:uuid}/edit")
    async def edit_form(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[UUID],
        row_id: FromPath[UUID],
        show: FromQuery[str | None] = None,
    ) -> Response[Any]:
        return await self._row_response(request, execution_id, row_id, editing=True, tab=_tab(show))

    @get("/{execution_id:uuid}/rows/{row_id:uuid}")
    async def row(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[UUID],
        row_id: FromPath[UUID],
        show: FromQuery[str | None] = None,
    ) -> Response[Any]:
        return await self._row_response(request, execution_id, row_id, tab=_tab(show))

    @post("/{execution_id:uuid}/rows/{row_id:uuid}/edit")
    async def edit(
        self, request: Request[Any, Any, Any], execution_id: FromPath[UUID], row_id: FromPath[UUID]
    ) -> Response[Any]:
        form = await request.form()
        action = approvals.edit_row(
            execution_id, row_id, str(form.get("content", "")), approver_of(request)
        )
        tab = _tab(str(form.get("show", "")))
        return await self._row_action(
            request, execution_id, row_id, action, (Conflict, InvalidInput), True, tab
        )

    @post("/{execution_id:uuid}/rows/decision")
    async def decide_all(
        self, request: Request[Any, Any, Any], execution_id: FromPath[UUID]
    ) -> Response[Any]:
        form = await request.form()
        decision = str(form.get("decision", ""))
        done = await approvals.decide_all_rows(execution_id, decision, approver_of(request))
        kept = "rows already decided keep their decision"
        if decision == "approved":
            kept += "; rows failing compliance are not approved (they will be skipped)"
        flash(request, f"{done.rows} undecided rows {decision} ({kept})", category="success")
        if (notice := _withdrawn_notice(done.withdrawn)) is not None:
            flash(request, notice, category="warning")
        return back_to(request, _review_url(execution_id, _tab(str(form.get("show", "")))))

    async def _confirm_page(
        self, request: Request[Any, Any, Any], execution_id: UUID, action: str, comment: str | None
    ) -> Template:
        """The step before a whole-execution decision: what it will do, asked once more (a
        page, so it works without JavaScript)."""
        execution = await executions.get_detail(execution_id, viewer=approver_of(request))
        rows = await executions.list_rows(execution_id)
        return page(
            request,
            "approvals/confirm.html",
            action=action,
            comment=comment or "",
            **_review_context(
                execution, rows, received=await approvals.approvals_received(execution_id)
            ),
        )

    @post("/{execution_id:uuid}/submit")
    async def submit(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[UUID],
        arq: NamedDependency[ArqRedis],
    ) -> Response[Any]:
        """Approve the execution with the row decisions made (undecided rows count as approved,
        as with the public API's approve) and resume the run: first a confirmation page saying
        what will be sent, then (with `confirmed`) the approval."""
        form = await request.form()
        comment = str(form.get("comment", "")).strip() or None
        if form.get("confirmed") != "yes":
            # The review screen's buttons send no comment: the confirmation page asks for it.
            await approvals.check_can_decide(execution_id, comment, comment_given="comment" in form)
            return await self._confirm_page(request, execution_id, "submit", comment)
        # A refusal (the same approver twice, self-approval, outside the approverGroups) is the
        # error page with its message, 409 or 403, as every refused decision here.
        approver = approver_of(request)
        outcome = await approvals.approve_execution(arq, execution_id, approver, comment)
        if not outcome.final:
            flash(
                request,
                f"Your approval is recorded ({outcome.received} of {outcome.required} "
                "approvals): the execution waits for another approver",
                category="success",
            )
            return back_to(request, f"{BASE}/{execution_id}")
        flash(request, "Approved: the approved rows are being sent", category="success")
        return back_to(request, f"/dashboard/executions/{execution_id}")

    @post("/{execution_id:uuid}/reject")
    async def reject(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[UUID],
        arq: NamedDependency[ArqRedis],
    ) -> Response[Any]:
        """Reject the whole execution, after a confirmation page (without `confirmed`)."""
        form = await request.form()
        comment = str(form.get("comment", "")).strip() or None
        if form.get("confirmed") != "yes":
            # The review screen's buttons send no comment: the confirmation page asks for it.
            await approvals.check_can_decide(execution_id, comment, comment_given="comment" in form)
            return await self._confirm_page(request, execution_id, "reject", comment)
        await approvals.reject_execution(arq, execution_id, approver_of(request), comment)
        flash(
            request, "Rejected: the execution is cancelled and nothing is sent", category="success"
        )
        return back_to(request, f"/dashboard/executions/{execution_id}")
