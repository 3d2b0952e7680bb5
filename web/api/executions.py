"""Controllers for the six endpoints of public-api.md, under /api/v1/public.

Handlers parse, call one domain function and shape the answer; the rules live in web.domain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from web.api import auth
from web.api.schemas import (
    ApprovalData,
    ApprovalMetadata,
    ApproveRequest,
    ApproveResponse,
    DecisionRequest,
    DecisionResponse,
    ExecuteRequest,
    ExecuteResponse,
    ExecutionListItem,
    ExecutionListResponse,
    IdempotentOperation,
    IdempotentOptionalBodyOperation,
    ListOperation,
    PendingApprovalResponse,
    ResultsOutput,
    ResultsResponse,
    StatusResponse,
    error_responses,
)
from web.domain import (
    approvals,
    approvers,
    clock,
    delivery_statuses,
    execution_pages,
    executions,
    idempotency,
    metrics,
    status_events,
)
from web.domain.errors import NotAcceptable
from web.domain.limits import QuotaExceeded, QuotaState
from web.domain.statuses import RowDecision

Result = TypeVar("Result")
ROW_DECISIONS = {"approve": RowDecision.APPROVED, "reject": RowDecision.REJECTED}


def _last_event_id(value: str | None) -> int | None:
    """A reconnect's Last-Event-ID (our ids are status versions); anything else: from the start."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _resumes_at(execution: executions.ExecutionView) -> str | msgspec.UnsetType:
    """`sendingResumesAt` of the results: only while the run waits for its sending hours."""
    if execution.status != "running" or execution.send_resumes_at is None:
        return msgspec.UNSET
    return _iso(execution.send_resumes_at)


def _status_body(snapshot: status_events.StatusSnapshot) -> StatusResponse:
    return StatusResponse(
        id=str(snapshot.id),
        status=snapshot.status,
        started_at=_iso(snapshot.started_at),
        completed_at=clock.iso(snapshot.completed_at),
        error=snapshot.error,
        approval_status=snapshot.approval_status,
    )


async def _sse(changes: AsyncIterator[status_events.StatusSnapshot | None]) -> AsyncIterator[bytes]:
    async for snapshot in changes:
        if snapshot is None:
            yield b": keep-alive\n\n"
            continue
        body = msgspec.json.encode(_status_body(snapshot)).decode()
        yield f"id: {snapshot.status_version}\nevent: status\ndata: {body}\n\n".encode()


def _iso(value: Any) -> str:
    return clock.iso(value) or ""


async def _once(
    request: Request[Any, Any, Any], status_code: int, body: Callable[[Result], msgspec.Struct]
) -> idempotency.Once[Result] | None:
    """The request's Idempotency-Key as the domain takes it (None without the header; 400
    naming the header when malformed), answering with `body`'s struct, encoded as Litestar
    would, under `status_code`."""
    key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    if key is None:
        return None
    call = idempotency.IdempotentCall(
        api_key_id=auth.api_key_of(request).id,
        key=key,
        fingerprint=idempotency.fingerprint(request.method, request.url.path, await request.body()),
        ttl=timedelta(seconds=auth.settings_of(request).idempotency_ttl_seconds),
    )
    return idempotency.Once(
        call=call,
        answer=lambda result: idempotency.Answer(status_code, msgspec.json.encode(body(result))),
    )


def _started(started: executions.StartedExecution) -> ExecuteResponse:
    return ExecuteResponse(
        execution_id=str(started.id),
        status=started.status,
        started_at=_iso(started.started_at),
        message="Execution started successfully",
    )


def _approved(outcome: approvals.ApprovalOutcome) -> ApproveResponse:
    """The spec's answer; with more than one approver needed, where the approvals stand."""
    if outcome.required == 1:
        return ApproveResponse(
            execution_id=str(outcome.execution_id),
            status="approved",
            message="Execution approved and will continue",
        )
    progress = f"{outcome.received} of {outcome.required} approvals"
    message = (
        f"Execution approved and will continue ({progress})"
        if outcome.final
        else f"Approval recorded ({progress}): the execution waits for "
        f"{outcome.required - outcome.received} more"
    )
    return ApproveResponse(
        execution_id=str(outcome.execution_id),
        status="approved",
        message=message,
        approval_status="approved" if outcome.final else "pending",
        approvals_received=outcome.received,
        approvals_required=outcome.required,
    )


def _cancelled(execution_id: UUID) -> DecisionResponse:
    return DecisionResponse(
        execution_id=str(execution_id), status="cancelled", message="Execution cancelled"
    )


def _rejected(execution_id: UUID) -> DecisionResponse:
    return DecisionResponse(
        execution_id=str(execution_id),
        status="rejected",
        message="Execution rejected and stopped",
    )


class PublicExecutionsController(Controller):
    path = "/"
    guards = [auth.require_api_key]
    tags = ["Public API"]

    @post(
        "/agents/{workflow_id:str}/execute",
        status_code=HTTP_202_ACCEPTED,
        guards=[auth.require_runnable_workflow],
        summary="Execute Agent",
        responses=error_responses(400, 403, 404, 409, 413, 422),
        operation_class=IdempotentOperation,
    )
    async def execute(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ExecuteRequest],
    ) -> ExecuteResponse:
        def report(quota: QuotaState) -> None:
            request.state.quota = quota  # the X-Quota-* headers, even if the enqueue fails

        try:
            started = await executions.start_execution(
                auth.scripts_of(request),
                auth.api_key_of(request),
                auth.workflow_of(request),
                data.input.csv_data,
                data.description,
                auth.settings_of(request).max_rows,
                on_counted=report,
                once=await _once(request, HTTP_202_ACCEPTED, _started),
            )
        except QuotaExceeded as exc:
            report(exc.quota)
            metrics.refused("quota")
            raise
        return _started(started)

    @get(
        "/executions",
        summary="List Executions",
        operation_class=ListOperation,
        description=(
            "The calling key's executions, newest first, a page at a time. Pass `nextCursor` "
            "back as `cursor` (with the same filters) for the next page; it is null on the last."
        ),
        responses=error_responses(),
    )
    async def list_executions(self, request: Request[Any, Any, Any]) -> ExecutionListResponse:
        params = request.query_params  # documented by ListOperation
        query = execution_pages.page_query(
            params.getall("status", []), params.get("workflowId"), params.get("limit"),
            params.get("cursor"),
        )  # fmt: skip
        page = await execution_pages.list_for_key(auth.api_key_of(request).id, query)
        return ExecutionListResponse(
            data=[
                ExecutionListItem(
                    id=str(entry.id),
                    workflow_id=entry.workflow,
                    status=entry.status,
                    approval_status=entry.approval_status,
                    started_at=_iso(entry.started_at),
                    completed_at=clock.iso(entry.completed_at),
                    description=entry.description,
                )
                for entry in page.executions
            ],
            next_cursor=page.next_cursor,
        )

    @get(
        "/executions/{execution_id:str}/status",
        summary="Get Execution Status",
        responses=error_responses(403, 404),
    )
    async def status(
        self, request: Request[Any, Any, Any], execution_id: FromPath[str]
    ) -> StatusResponse:
        execution = await executions.get_for_key(execution_id, auth.api_key_of(request).id)
        return StatusResponse(
            id=str(execution.id),
            status=execution.status,
            started_at=_iso(execution.started_at),
            completed_at=clock.iso(execution.completed_at),
            error=execution.error,
            approval_status=execution.approval_status,
        )

    @get(
        "/executions/{execution_id:str}/events",
        summary="Stream Execution Status",
        description=(
            "Server-Sent Events (`Accept: text/event-stream`): one `event: status` at once with "
            "the status endpoint's body as `data`, then one per change, each with an `id:`; a "
            "`: keep-alive` comment every 15 s; the stream ends after a final status. A "
            "reconnect with `Last-Event-ID` gets only the events after that id."
        ),
        responses=error_responses(403, 404, 406),
    )
    async def events(self, request: Request[Any, Any, Any], execution_id: FromPath[str]) -> Stream:
        if "text/event-stream" not in request.headers.get("accept", ""):
            raise NotAcceptable("This endpoint answers text/event-stream only: send that Accept")
        uid = executions.parse_execution_id(execution_id)
        key_id = auth.api_key_of(request).id
        await status_events.snapshot_for_key(uid, key_id)  # 404 before the stream starts
        changes = status_events.stream_status(
            auth.status_listener_of(request),
            uid,
            key_id,
            _last_event_id(request.headers.get("last-event-id")),
            auth.settings_of(request).sse_keep_alive_seconds,
        )
        return Stream(
            _sse(changes),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @get(
        "/executions/{execution_id:str}/results",
        summary="Get Execution Results",
        responses=error_responses(403, 404),
    )
    async def results(
        self, request: Request[Any, Any, Any], execution_id: FromPath[str]
    ) -> ResultsResponse:
        execution = await executions.get_for_key(
            execution_id, auth.api_key_of(request).id, with_output=True, with_definition=True
        )
        output = execution.output
        if output is not None and delivery_statuses.tracked(execution.definition):
            output = await delivery_statuses.with_delivery(execution.id, output)
        return ResultsResponse(
            id=str(execution.id),
            status=execution.status,
            output=None if output is None else msgspec.convert(output, ResultsOutput),
            error=execution.error,
            started_at=_iso(execution.started_at),
            completed_at=clock.iso(execution.completed_at),
            sending_resumes_at=_resumes_at(execution),
        )

    @get(
        "/executions/{execution_id:str}/pending-approval",
        summary="Get Pending Approval Data",
        responses=error_responses(403, 404, 409),
    )
    async def pending_approval(
        self, request: Request[Any, Any, Any], execution_id: FromPath[str]
    ) -> PendingApprovalResponse:
        execution = await executions.get_for_key(
            execution_id, auth.api_key_of(request).id, with_definition=True
        )
        pending = await approvals.pending_approval_data(execution)
        rules = pending.rules
        return PendingApprovalResponse(
            id=str(execution.id),
            workflow_id=execution.workflow,
            status=execution.status,
            approval_data=ApprovalData(
                rows=pending.rows,
                metadata=ApprovalMetadata(
                    total_rows=len(pending.rows),
                    title=rules.title,
                    description=rules.description,
                    allow_bulk_approval=rules.allow_bulk_approval,
                    require_comment=rules.require_comment,
                    approvals_required=rules.required_approvals,
                    approvals_received=pending.approvals_received,
                    approval_progress=pending.progress,
                    approval_deadline=clock.iso(pending.approval_deadline),
                ),
                display_fields=rules.display_fields,
            ),
            started_at=_iso(execution.started_at),
        )

    @post(
        "/executions/{execution_id:str}/approve",
        status_code=HTTP_200_OK,
        summary="Approve Execution",
        responses=error_responses(400, 403, 404, 409, 422),
        operation_class=IdempotentOptionalBodyOperation,
    )
    async def approve(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[str],
        data: JSONBody[ApproveRequest | None] = None,
    ) -> ApproveResponse:
        api_key = auth.api_key_of(request)
        uid = executions.parse_execution_id(execution_id)
        choices = [
            approvals.RowChoice(
                decision=RowDecision.APPROVED
                if row.decision == "approve"
                else RowDecision.REJECTED,
                index=row.index,
                customer_id=row.customer_id,
                reason=row.reason,
                content=row.content,
            )
            for row in (data.rows or [] if data else [])
        ]
        outcome = await approvals.approve_execution(
            auth.scripts_of(request),
            uid,
            approvers.Approver.api_key(auth.actor_of(request)),
            data.comment if data else None,
            api_key_id=api_key.id,
            once=await _once(request, HTTP_200_OK, _approved),
            choices=choices,
        )
        return _approved(outcome)

    @post(
        "/executions/{execution_id:str}/reject",
        status_code=HTTP_200_OK,
        summary="Reject Execution",
        responses=error_responses(400, 403, 404, 409, 422),
        operation_class=IdempotentOptionalBodyOperation,
    )
    async def reject(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[str],
        data: JSONBody[DecisionRequest | None] = None,
    ) -> DecisionResponse:
        api_key = auth.api_key_of(request)
        uid = executions.parse_execution_id(execution_id)
        await approvals.reject_execution(
            auth.scripts_of(request),
            uid,
            approvers.Approver.api_key(auth.actor_of(request)),
            data.comment if data else None,
            api_key_id=api_key.id,
            once=await _once(request, HTTP_200_OK, _rejected),
        )
        return _rejected(uid)

    @post(
        "/executions/{execution_id:str}/cancel",
        status_code=HTTP_200_OK,
        summary="Cancel Execution",
        description=(
            "Stops a `pending`, `running` or `pending_approval` execution: it ends `cancelled`; "
            "a message already handed to the provider stays sent, every other row ends "
            '`{"status": "cancelled", "reason": "Execution cancelled"}` in the results. '
            "From a final status: 409, and nothing changes."
        ),
        responses=error_responses(400, 403, 404, 409, 422),
        operation_class=IdempotentOptionalBodyOperation,
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[str],
        data: JSONBody[DecisionRequest | None] = None,
    ) -> DecisionResponse:
        api_key = auth.api_key_of(request)
        uid = executions.parse_execution_id(execution_id)
        await executions.cancel_execution(
            auth.scripts_of(request),
            uid,
            api_key.id,
            data.comment if data else None,
            auth.actor_of(request),
            once=await _once(request, HTTP_200_OK, _cancelled),
        )
        return _cancelled(uid)
