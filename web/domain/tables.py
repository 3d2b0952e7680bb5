"""Every Piccolo table of flowgate. Plain column definitions: the rules live in the other
domain modules. Imports nothing of web.api, web.dashboard or worker."""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    UUID,
    Array,
    Boolean,
    ForeignKey,
    Integer,
    Real,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.constraints import Check, Unique
from piccolo.table import Table


class ApiKey(Table, tablename="api_key"):
    """A customer's API key. The secret itself is never stored: only its SHA-256 and a prefix."""

    id = UUID(primary_key=True)
    name = Varchar(length=200)
    key_hash = Varchar(length=64, unique=True, index=True)
    prefix = Varchar(length=8)
    active = Boolean(default=True)
    expires_at = Timestamptz(null=True, default=None)
    monthly_limit = Integer(default=1000)
    # Token bucket of this key; NULL means the defaults from settings.
    rate_limit_burst = Integer(null=True, default=None)
    rate_limit_refill_per_second = Real(null=True, default=None)
    # Empty means "every workflow".
    allowed_workflows = Array(base_column=Varchar(length=200), default=list)
    webhook_url = Text(null=True, default=None)
    webhook_events = Array(base_column=Varchar(length=64), default=list)
    webhook_secret = Text(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    last_used_at = Timestamptz(null=True, default=None)
    revoked_at = Timestamptz(null=True, default=None)
    # Rotation: the replaced secret's hash keeps working until previous_key_expires_at.
    previous_key_hash = Varchar(length=64, null=True, default=None, index=True)
    previous_key_expires_at = Timestamptz(null=True, default=None)


class ApiKeyUsage(Table, tablename="api_key_usage"):
    """Executions accepted per key and calendar month (UTC); incremented atomically."""

    id = UUID(primary_key=True)
    api_key = ForeignKey(references=ApiKey, null=False)
    month = Varchar(length=7)  # "2025-10"
    used = Integer(default=0)
    # The key's monthly limit when `used` was last counted. The database refuses a count past
    # it, so an execute counts its quota in the same statement that stores it
    # (web.domain.executions.start_execution). NULL on rows counted before this column.
    monthly_limit = Integer(null=True, default=None)
    unique_key_month = Unique([api_key, month])
    within_monthly_limit = Check("used <= monthly_limit", name="within_monthly_limit")


class Workflow(Table, tablename="workflow"):
    """A workflow ("agent") definition: ordered, typed steps with their settings, as data."""

    id = Varchar(length=200, primary_key=True)
    name = Varchar(length=200)
    description = Text(default="")
    active = Boolean(default=True)
    required_fields = Array(base_column=Varchar(length=200), default=list)
    steps = JSONB(default="[]")
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class Execution(Table, tablename="execution"):
    """One run of a workflow for one API key. `definition` is the workflow as it was when the
    execution started, so later edits of the workflow never change a run in flight."""

    id = UUID(primary_key=True)
    workflow = ForeignKey(references=Workflow, null=False)
    api_key = ForeignKey(references=ApiKey, null=False)
    description = Text(null=True, default=None)
    definition = JSONB(default="{}")
    status = Varchar(length=32, default="pending", index=True)
    approval_status = Varchar(length=16, null=True, default=None)
    approval_comment = Text(null=True, default=None)
    approval_decided_by = Varchar(length=200, null=True, default=None)
    approval_decided_at = Timestamptz(null=True, default=None)
    row_count = Integer(default=0)
    # When csvData was cut to the row limit: how many rows the request had.
    truncated_from = Integer(null=True, default=None)
    # Index of the next step to run; steps before it have their results in step_results.
    current_step = Integer(default=0)
    step_results = JSONB(default="[]")
    output = JSONB(null=True, default=None)
    error = Text(null=True, default=None)
    # A worker's claim on the run: only the holder of an unexpired lease runs steps.
    lease_token = UUID(null=True, default=None)
    lease_expires_at = Timestamptz(null=True, default=None)
    # How many times the run was queued again (by the reconciler, or a job handing the rest of a
    # step to the next): part of the job id, so each new job is one arq has never seen.
    run_attempt = Integer(default=0)
    created_at = Timestamptz(default=TimestamptzNow(), index=True)
    started_at = Timestamptz(default=TimestamptzNow())
    completed_at = Timestamptz(null=True, default=None)
    updated_at = Timestamptz(default=TimestamptzNow())
    # Raised by a trigger whenever status or approval_status changes, which also notifies
    # web.domain.status_events in the same transaction: the id of GET /executions/:id/events.
    status_version = Integer(default=0)
    # When web.domain.retention removed this execution's personal data (its summary stays).
    personal_data_purged_at = Timestamptz(null=True, default=None)


class ExecutionRow(Table, tablename="execution_row"):
    """One input row of an execution and everything that happened to it."""

    id = UUID(primary_key=True)
    execution = ForeignKey(references=Execution, null=False, index=True)
    position = Integer()
    data = JSONB(default="{}")
    generated_content = Text(null=True, default=None)
    original_content = Text(null=True, default=None)
    compliance_status = Varchar(length=16, null=True, default=None)
    compliance_reasons = JSONB(default="[]")
    decision = Varchar(length=16, null=True, default=None)
    decided_by = Varchar(length=200, null=True, default=None)
    decided_at = Timestamptz(null=True, default=None)
    # Why a reviewer rejected the row (the API's per-row reason), shown verbatim in the results.
    decision_reason = Text(null=True, default=None)
    # A reviewer's edit of the generated message: original_content keeps what was generated.
    edited_by = Varchar(length=200, null=True, default=None)
    edited_at = Timestamptz(null=True, default=None)
    # Token usage of the content provider for this row ({prompt_tokens, completion_tokens, ...}).
    content_usage = JSONB(null=True, default=None)
    send_status = Varchar(length=16, null=True, default=None)
    message_id = Varchar(length=200, null=True, default=None)
    error = Text(null=True, default=None)
    sent_at = Timestamptz(null=True, default=None)
    unique_execution_position = Unique([execution, position])


class SandboxMessage(Table, tablename="sandbox_message"):
    """What the sandbox messaging provider "sent": one record per execution row at most."""

    id = UUID(primary_key=True)
    execution_row = ForeignKey(references=ExecutionRow, null=False, unique=True)
    channel = Varchar(length=32)
    recipient = Varchar(length=64)
    body = Text()
    message_id = Varchar(length=200, unique=True)
    created_at = Timestamptz(default=TimestamptzNow())


class WebhookEvent(Table, tablename="webhook_event"):
    """One event to tell a customer about (the transactional outbox of webhooks).

    Written in the same transaction as the status change it reports; `payload` is the exact
    body sent (and signed) on every attempt. `id` is the Standard Webhooks `webhook-id`.
    Events of one execution are delivered one after the other, in `sequence` order.
    """

    id = UUID(primary_key=True)
    execution = ForeignKey(references=Execution, null=False, index=True)
    api_key = ForeignKey(references=ApiKey, null=False)
    sequence = Integer()
    event = Varchar(length=64)
    payload = Text()
    status = Varchar(length=16, default="pending", index=True)  # pending, delivered, failed
    attempts = Integer(default=0)  # in the current delivery cycle (a redelivery starts a new one)
    created_at = Timestamptz(default=TimestamptzNow())
    finished_at = Timestamptz(null=True, default=None)
    unique_execution_sequence = Unique([execution, sequence])


class WebhookAttempt(Table, tablename="webhook_attempt"):
    """One HTTP attempt to deliver a webhook event, whatever came of it."""

    id = UUID(primary_key=True)
    event = ForeignKey(references=WebhookEvent, null=False, index=True)
    attempt_number = Integer()
    url = Text()
    status_code = Integer(null=True, default=None)
    duration_ms = Integer(default=0)
    error = Text(null=True, default=None)
    response_body = Text(null=True, default=None)  # the first 1 KiB
    created_at = Timestamptz(default=TimestamptzNow())


class User(Table, tablename="dashboard_user"):
    """A person who signs in to the dashboard: `admin` or `reviewer`."""

    id = UUID(primary_key=True)
    email = Varchar(length=320, unique=True, index=True)
    password_hash = Text()  # argon2
    role = Varchar(length=16, default="reviewer")
    active = Boolean(default=True)
    created_at = Timestamptz(default=TimestamptzNow())
    last_login_at = Timestamptz(null=True, default=None)


class IdempotentRequest(Table, tablename="idempotent_request"):
    """A public API request sent with an `Idempotency-Key`, and the answer it got: stored in
    the transaction of the work it describes (web.domain.idempotency), replayed until expiry."""

    id = UUID(primary_key=True)
    api_key = ForeignKey(references=ApiKey, null=False)
    key = Varchar(length=255)
    fingerprint = Varchar(length=64)  # sha256 of method, path and body
    status_code = Integer()
    body = Text()
    created_at = Timestamptz(default=TimestamptzNow())
    expires_at = Timestamptz(index=True)
    unique_key_per_api_key = Unique([api_key, key])
