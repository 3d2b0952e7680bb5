"""Controllers for the six endpoints of public-api.md, under /api/v1/public.

Handlers parse, call one domain function and shape the answer; the rules live in web.domain.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from web.api import auth
from web.api.schemas import (
    ApprovalData,
    ApprovalMetadata,
    DecisionRequest,
    DecisionResponse,
    ExecuteRequest,
    ExecuteResponse,
    OptionalBodyOperation,
    PendingApprovalResponse,
    ResultsOutput,
    ResultsResponse,
    StatusResponse,
    error_responses,
)
from web.domain import approvals, clock, executions
from web.domain.limits import QuotaExceeded, QuotaState


def _iso(value: Any) -> str:
    return clock.iso(value) or ""


class PublicExecutionsController(Controller):
    path = "/"
    guards = [auth.require_api_key]
    tags = ["Public API"]

    @post(
        "/agents/{workflow_id:str}/execute",
        status_code=HTTP_202_ACCEPTED,
        guards=[auth.require_runnable_workflow],
        summary="Execute Agent",
        responses=error_responses(400, 403, 404, 413),
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
            )
        except QuotaExceeded as exc:
            report(exc.quota)
            raise
        return ExecuteResponse(
            execution_id=str(started.id),
            status=started.status,
            started_at=_iso(started.started_at),
            message="Execution started successfully",
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
        "/executions/{execution_id:str}/results",
        summary="Get Execution Results",
        responses=error_responses(403, 404),
    )
    async def results(
        self, request: Request[Any, Any, Any], execution_id: FromPath[str]
    ) -> ResultsResponse:
        execution = await executions.get_for_key(
            execution_id, auth.api_key_of(request).id, with_output=True
        )
        output = execution.output
        return ResultsResponse(
            id=str(execution.id),
            status=execution.status,
            output=None if output is None else msgspec.convert(output, ResultsOutput),
            error=execution.error,
            started_at=_iso(execution.started_at),
            completed_at=clock.iso(execution.completed_at),
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
                ),
                display_fields=rules.display_fields,
            ),
            started_at=_iso(execution.started_at),
        )

    @post(
        "/executions/{execution_id:str}/approve",
        status_code=HTTP_200_OK,
        summary="Approve Execution",
        responses=error_responses(400, 403, 404, 409),
        operation_class=OptionalBodyOperation,
    )
    async def approve(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[str],
        data: JSONBody[DecisionRequest | None] = None,
    ) -> DecisionResponse:
        api_key = auth.api_key_of(request)
        uid = executions.parse_execution_id(execution_id)
        await approvals.approve_execution(
            auth.scripts_of(request),
            uid,
            f"api_key:{api_key.name}",
            data.comment if data else None,
            api_key_id=api_key.id,
        )
        return DecisionResponse(
            execution_id=str(uid),
            status="approved",
            message="Execution approved and will continue",
        )

    @post(
        "/executions/{execution_id:str}/reject",
        status_code=HTTP_200_OK,
        summary="Reject Execution",
        responses=error_responses(400, 403, 404, 409),
        operation_class=OptionalBodyOperation,
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
            uid, f"api_key:{api_key.name}", data.comment if data else None, api_key_id=api_key.id
        )
        return DecisionResponse(
            execution_id=str(uid),
            status="rejected",
            message="Execution rejected and stopped",
        )
