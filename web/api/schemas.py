"""Request and response bodies of the public API, with the spec's camelCase names on the wire
(public-api.md). msgspec Structs: Litestar validates requests and documents them in OpenAPI."""

from __future__ import annotations

from typing import Any

import msgspec


class ExecuteInput(msgspec.Struct, rename="camel"):
    csv_data: list[dict[str, Any]]


class ExecuteRequest(msgspec.Struct, rename="camel"):
    input: ExecuteInput
    description: str | None = None


class ExecuteResponse(msgspec.Struct, rename="camel"):
    execution_id: str
    status: str
    started_at: str
    message: str


class StatusResponse(msgspec.Struct, rename="camel"):
    id: str
    status: str
    started_at: str
    completed_at: str | None
    error: str | None
    approval_status: str | None


class ResultItem(msgspec.Struct, rename="camel"):
    customer_id: Any
    status: str
    message_id: str | None
    error: str | msgspec.UnsetType | None = msgspec.UNSET
    reason: str | msgspec.UnsetType | None = msgspec.UNSET


class ResultsOutput(msgspec.Struct, rename="camel"):
    success_count: int
    failed_count: int
    results: list[ResultItem]


class ResultsResponse(msgspec.Struct, rename="camel"):
    id: str
    status: str
    output: ResultsOutput | None
    error: str | None
    started_at: str
    completed_at: str | None


class ApprovalMetadata(msgspec.Struct, rename="camel"):
    total_rows: int
    title: str
    description: str
    allow_bulk_approval: bool
    require_comment: bool


class ApprovalData(msgspec.Struct, rename="camel"):
    rows: list[dict[str, Any]]
    metadata: ApprovalMetadata
    display_fields: list[str]


class PendingApprovalResponse(msgspec.Struct, rename="camel"):
    id: str
    workflow_id: str
    status: str
    approval_data: ApprovalData
    started_at: str


class DecisionRequest(msgspec.Struct, rename="camel"):
    comment: str | None = None


class DecisionResponse(msgspec.Struct, rename="camel"):
    execution_id: str
    status: str
    message: str


class ErrorBody(msgspec.Struct, rename="camel"):
    """public-api.md "Error Responses": the one shape of every error of this API."""

    message: str
    error: str
    status_code: int
