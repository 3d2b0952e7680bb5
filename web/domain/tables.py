"""Every Piccolo table of flowgate. Plain column definitions: the rules live in the other
domain modules. Imports nothing of web.api, web.dashboard or worker."""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    UUID,
    Array,
    BigInt,
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
    # When the run stopped for approval (the approval wait metric, web.domain.metrics).
    approval_requested_at = Timestamptz(null=True, default=None)
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
    # While a send step waits outside its sending hours (sendWindow): when its deferred job
    # resumes it. Cleared when a worker claims the run.
    send_resumes_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())  # indexed with id: execution_created_id
    started_at = Timestamptz(default=TimestamptzNow())
    completed_at = Timestamptz(null=True, default=None)
    updated_at = Timestamptz(default=TimestamptzNow())
    # Raised by a trigger whenever status or approval_status changes, which also notifies
    # web.domain.status_events in the same transaction: the id of GET /executions/:id/events.
    status_version = Integer(default=0)
    # When web.domain.retention removed this execution's personal data (its summary stays).
    personal_data_purged_at = Timestamptz(null=True, default=None)
    # The approval step's `timeout` counted from entering pending_approval: at this moment the
    # execution ends cancelled (web.domain.approvals.time_out). NULL: no deadline.
    approval_deadline = Timestamptz(null=True, default=None)
    # `remindBefore` that deadline: when the approvers are reminded. Cleared by the reminder
    # (web.domain.approvals.remind), so it is sent once, by its job or the reconciler's
    # backstop, whichever comes first. NULL: no reminder due (none, or sent).
    approval_remind_at = Timestamptz(null=True, default=None)
    # The delivery counts last told in an `execution.delivery_updated` webhook, and when: the
    # event goes out at most once per FLOWGATE_DELIVERY_WEBHOOK_INTERVAL_SECONDS per execution.
    delivery_notified_counts = JSONB(null=True, default=None)
    delivery_notified_at = Timestamptz(null=True, default=None)


class ApprovalSubmission(Table, tablename="approval_submission"):
    """One approver's approval of an execution (maker-checker: `requiredApprovals` distinct
    approvers resume it). `approver` is `user:<id>` or `api_key:<id>`, unique per execution."""

    id = UUID(primary_key=True)
    execution = ForeignKey(references=Execution, null=False, index=True)
    approver = Varchar(length=200)
    approver_label = Varchar(length=400)  # the email or `api_key:<name>`, as decided_by
    comment = Text(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    unique_execution_approver = Unique([execution, approver])


class Notification(Table, tablename="notification"):
    """One message to the approvers about an execution waiting for approval: `kind` is
    waiting, reminder or timed_out; `channel` email (one per recipient) or slack. Written in
    the transaction of what it reports, sent by a job of its own with retries."""

    id = UUID(primary_key=True)
    execution = ForeignKey(references=Execution, null=False, index=True)
    kind = Varchar(length=16)
    channel = Varchar(length=16)
    recipient = Text()  # an email address or the Slack URL: never logged
    status = Varchar(length=16, default="pending", index=True)  # pending, sent, failed
    attempts = Integer(default=0)
    created_at = Timestamptz(default=TimestamptzNow())
    finished_at = Timestamptz(null=True, default=None)
    unique_notification = Unique([execution, kind, channel, recipient])


class NotificationAttempt(Table, tablename="notification_attempt"):
    """One attempt to send a notification, whatever came of it."""

    id = UUID(primary_key=True)
    notification = ForeignKey(references=Notification, null=False, index=True)
    attempt_number = Integer()
    error = Text(null=True, default=None)
    duration_ms = Integer(default=0)
    created_at = Timestamptz(default=TimestamptzNow())


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
    # Indexed: WhatsApp's status notifications find their row by it (web.domain.delivery_statuses).
    message_id = Varchar(length=200, null=True, default=None, index=True)
    error = Text(null=True, default=None)
    sent_at = Timestamptz(null=True, default=None)
    # The latest delivery status the provider reported for a sent row (sent, delivered, read,
    # failed); NULL until one arrives. `delivery_error` is "<code>: <title>" when it failed.
    delivery_status = Varchar(length=16, null=True, default=None)
    delivery_error = Text(null=True, default=None)
    delivery_updated_at = Timestamptz(null=True, default=None)
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
    # Approver groups (an approval step's `approverGroups`), set by an admin.
    groups = Array(base_column=Varchar(length=64), default=list)


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


class WhatsAppNotification(Table, tablename="whatsapp_notification"):
    """One POST to /webhooks/whatsapp with a valid signature, stored as received (the raw body)
    before it is acknowledged, and processed off the request path (web.domain.whatsapp_inbound)."""

    id = UUID(primary_key=True)
    body = Text()
    received_at = Timestamptz(default=TimestamptzNow())
    processed_at = Timestamptz(null=True, default=None, index=True)
    error = Text(null=True, default=None)


class Suppression(Table, tablename="suppression"):
    """A phone number (E.164, normalised) that must never be messaged: an opt-out."""

    id = UUID(primary_key=True)
    phone = Varchar(length=16, unique=True, index=True)
    reason = Text(null=True, default=None)
    source = Varchar(length=16)  # inbound, cli, dashboard, import
    created_at = Timestamptz(default=TimestamptzNow())


class AuditEntry(Table, tablename="audit_entry"):
    """One decision or administrative act (web.domain.audit). Append-only: a trigger refuses
    UPDATE, DELETE and TRUNCATE, except the retention purge's DELETE. `id` is gapless (taken
    from audit_head under its lock), `hash` chains each entry to the one before."""

    id = BigInt(primary_key=True)
    at = Timestamptz(index=True)
    actor_type = Varchar(length=16)
    actor = Varchar(length=320, index=True)  # an email, key:<prefix>, cli or system
    actor_id = Varchar(length=200, null=True, default=None)  # the user's or key's id
    action = Varchar(length=64, index=True)
    target_type = Varchar(length=32, null=True, default=None)
    target_id = Varchar(length=200, null=True, default=None)
    execution_id = UUID(null=True, default=None, index=True)
    before = JSONB(null=True, default=None)
    after = JSONB(null=True, default=None)
    comment = Text(null=True, default=None)
    ip = Varchar(length=64, null=True, default=None)
    user_agent = Text(null=True, default=None)
    prev_hash = Varchar(length=64)
    hash = Varchar(length=64)


class AuditHead(Table, tablename="audit_head"):
    """The chain's head: one row (id 1), locked FOR UPDATE by every append, so appends are
    serialised and the chain never forks."""

    id = Integer(primary_key=True)
    seq = BigInt(default=0)
    hash = Varchar(length=64)


class AuditCheckpoint(Table, tablename="audit_checkpoint"):
    """Written by each batch of the retention purge: the last entry it deleted, so that
    `flowgate audit verify` starts from there. Append-only like audit_entry."""

    id = UUID(primary_key=True)
    entry_id = BigInt()
    entry_hash = Varchar(length=64)
    entry_at = Timestamptz()
    purged = Integer()
    created_at = Timestamptz(default=TimestamptzNow())
