"""Request and response bodies of the public API, with the spec's camelCase names on the wire
(public-api.md). msgspec Structs: Litestar validates requests and documents them in OpenAPI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Operation, Parameter, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType

from web.domain.statuses import ExecutionStatus


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
    # Beside the contract: true once the retention policy removed the row's personal data
    # (customerId is then null; web.domain.retention).
    purged: bool | msgspec.UnsetType = msgspec.UNSET
    # Added beside the contract (issue 16), on rows sent through a provider that reports
    # delivery (whatsapp_cloud): `accepted` until WhatsApp reports sent, delivered, read or
    # failed; `deliveryError` ("131026: Message undeliverable") when it failed.
    delivery_status: (
        Literal["accepted", "sent", "delivered", "read", "failed"] | msgspec.UnsetType
    ) = msgspec.UNSET
    delivery_error: str | msgspec.UnsetType = msgspec.UNSET


class DeliveryCounts(msgspec.Struct):
    """Sent rows by their latest delivery status."""

    accepted: int
    sent: int
    delivered: int
    read: int
    failed: int


class ResultsOutput(msgspec.Struct, rename="camel"):
    success_count: int
    failed_count: int
    results: list[ResultItem]
    # Added beside the contract, with deliveryStatus (whatsapp_cloud sends only).
    delivery_counts: DeliveryCounts | msgspec.UnsetType = msgspec.UNSET


class ResultsResponse(msgspec.Struct, rename="camel"):
    id: str
    status: str
    output: ResultsOutput | None
    error: str | None
    started_at: str
    completed_at: str | None
    # Added beside the contract: only while a send step waits for its sending hours (sendWindow).
    sending_resumes_at: str | msgspec.UnsetType = msgspec.UNSET


class ApprovalMetadata(msgspec.Struct, rename="camel"):
    total_rows: int
    title: str
    description: str
    allow_bulk_approval: bool
    require_comment: bool
    # Added beside the contract (maker-checker, deadlines): "1 of 2 approvals".
    approvals_required: int = 1
    approvals_received: int = 0
    approval_progress: str = "0 of 1 approvals"
    approval_deadline: str | None = None


# public-api.md's rows are the step's displayFields; two keys are added beside them.
PENDING_ROW_DESCRIPTION = (
    "One row through the approval step's `displayFields` (every field when it names none), "
    "plus two keys added beside the contract: `index` (the row's position from 0, which a "
    "per-row decision in `approve` can address) and `complianceReasons` (a list of strings: "
    "why the row failed the compliance check, empty when it passed; a failing row is never "
    "sent, whatever is decided)."
)


class ApprovalData(msgspec.Struct, rename="camel"):
    rows: Annotated[
        list[dict[str, Any]],
        msgspec.Meta(description=PENDING_ROW_DESCRIPTION),
    ]
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


class RowDecisionItem(msgspec.Struct, rename="camel"):
    """One row's decision in an approval: by `index` (as pending-approval numbers rows) or by a
    `customerId` unique in the execution; `reason` for reject, `content` (a new message,
    checked for compliance again) for approve."""

    decision: Literal["approve", "reject"]
    index: int | None = None
    customer_id: str | None = None
    reason: str | None = None
    content: str | None = None


class ApproveRequest(msgspec.Struct, rename="camel"):
    comment: str | None = None
    # Added beside the contract: rows not listed are decided as approve always did.
    rows: list[RowDecisionItem] | None = None


class DecisionResponse(msgspec.Struct, rename="camel"):
    execution_id: str
    status: str
    message: str


class ApproveResponse(DecisionResponse, rename="camel", omit_defaults=True):
    """The spec's approve answer; added beside it, only when the workflow needs more than one
    approver: where the approvals stand after this one (approvalStatus stays `pending` until
    the last)."""

    approval_status: str | None = None
    approvals_received: int | None = None
    approvals_required: int | None = None


class ErrorBody(msgspec.Struct, rename="camel"):
    """public-api.md "Error Responses": the one shape of every error of this API."""

    message: str
    error: str
    status_code: int


class RateLimitedBody(msgspec.Struct, rename="camel"):
    """public-api.md "429 Too Many Requests"."""

    status_code: int
    message: str
    error: str
    retry_after: int


_ERRORS = {
    400: "The request is invalid: the message names the first problem",
    401: "Missing, malformed or unknown API key",
    403: "Key inactive or expired, workflow inactive or not allowed, or monthly quota used up",
    404: "Execution or workflow not found (another key's execution is not found either)",
    409: "The execution is not waiting for approval, or a request with the same "
    "Idempotency-Key is still being processed",
    406: "The events stream needs `Accept: text/event-stream`",
    413: "Request body over the size limit",
    422: "The Idempotency-Key was already used for a different request",
    503: "PostgreSQL or Redis is unreachable; retry",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI documentation of the error answers a handler can give, in the one error shape."""
    responses = {
        code: ResponseSpec(data_container=ErrorBody, description=_ERRORS[code], examples=[])
        for code in (*codes, 400, 401, 503)
    }
    responses[429] = ResponseSpec(
        data_container=RateLimitedBody, description="Rate limit exceeded", examples=[]
    )
    return responses


@dataclass
class OptionalBodyOperation(Operation):
    """Litestar documents every request body as required; approve and reject take an optional
    one (the comment)."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False


class ExecutionListItem(msgspec.Struct, rename="camel"):
    id: str
    workflow_id: str
    status: str
    approval_status: str | None
    started_at: str
    completed_at: str | None
    description: str | None


class ExecutionListResponse(msgspec.Struct, rename="camel"):
    data: list[ExecutionListItem]
    next_cursor: str | None


IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key",
    param_in="header",
    required=False,
    description=(
        "Makes retrying safe: the first request with a key is processed and its answer kept "
        "for 24 hours (FLOWGATE_IDEMPOTENCY_TTL_SECONDS); the same key with the same method, "
        "path and body gets that answer again, with `Idempotent-Replayed: true`, and nothing "
        "is done twice. The same key with another request: 422; while the first is still "
        "being processed: 409. Keys are scoped to the API key. A request refused (4xx, 503) "
        "stores nothing, so it can be retried with the same key."
    ),
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255, pattern="^[!-~]+$"),
)


@dataclass
class IdempotentOperation(Operation):
    """An operation that takes the optional Idempotency-Key header."""

    def __post_init__(self) -> None:
        self.parameters = [*(self.parameters or []), IDEMPOTENCY_KEY]


@dataclass
class IdempotentOptionalBodyOperation(OptionalBodyOperation):
    """Approve and reject: an optional body and the optional Idempotency-Key header."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.parameters = [*(self.parameters or []), IDEMPOTENCY_KEY]


def _query(name: str, description: str, schema: Schema) -> Parameter:
    return Parameter(
        name=name, param_in="query", required=False, description=description, schema=schema
    )


LIST_PARAMETERS = [
    _query(
        "status",
        "Only these statuses (repeat the parameter for several)",
        Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(
                type=OpenAPIType.STRING, enum=[status.value for status in ExecutionStatus]
            ),
        ),
    ),
    _query("workflowId", "Only this workflow's executions", Schema(type=OpenAPIType.STRING)),
    _query(
        "limit",
        "Page size, 1 to 100 (default 20)",
        Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=100),
    ),
    _query("cursor", "`nextCursor` of the previous page", Schema(type=OpenAPIType.STRING)),
]


@dataclass
class ListOperation(Operation):
    """GET /executions reads its query itself (execution_pages.page_query names a bad value);
    this documents it exactly, without the nullable unions Litestar writes for optional ones."""

    def __post_init__(self) -> None:
        self.parameters = [*(self.parameters or []), *LIST_PARAMETERS]
