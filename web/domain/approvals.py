"""Approve or reject an execution waiting at its approval step, and the row-by-row review.

Approving marks every undecided row approved and hands the run back to the worker (queued
after the commit). Rejecting ends the execution as `cancelled` with every row `rejected`.
Both are one transaction guarded by `status = 'pending_approval'`, so a second decision on the
same execution is refused instead of silently overwriting the first. The public API, the
dashboard and any other caller use the functions here; the approval step's rules (comment
required, bulk approval, display fields) are read here and nowhere else.
Imports only web.domain.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol
from uuid import UUID

import msgspec
from redis.asyncio import Redis

from web.domain import (
    approvers,
    audit,
    clock,
    compliance,
    durations,
    executions,
    idempotency,
    list_pages,
    metrics,
    notifications,
    pool,
    queue,
    webhooks,
)
from web.domain.actors import Actor
from web.domain.approvers import Approver
from web.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from web.domain.execution_rows import RowView
from web.domain.script_client import ScriptClient
from web.domain.statuses import ComplianceStatus, ExecutionStatus, RowDecision
from web.domain.tables import ApprovalSubmission, Execution, ExecutionRow
from web.domain.types import (
    Definition,
    ExecutionOutput,
    ReadModel,
    RowData,
    StepResult,
    StepSettings,
    from_row,
    json_text,
)
from web.domain.workflows import approval_settings, step_settings

REJECTED_REASON = "Rejected by reviewer"
# The two row values the API shows beside the input fields (public-api.md "Get Pending
# Approval Data"); the review screen draws them in columns of their own.
ROW_EXTRAS = ("generated_content", "compliance_status")


class ApprovalRules(msgspec.Struct, frozen=True):
    """The approval step's settings with their defaults: the one reading of them."""

    title: str
    description: str
    display_fields: list[str]  # empty: every field of each row
    allow_bulk_approval: bool
    require_comment: bool
    # Maker-checker: distinct approvers needed; may a row's editor complete the approval;
    # the groups whose members (and admins) see and decide it (empty: every reviewer).
    required_approvals: int = 1
    allow_self_approval: bool = True
    approver_groups: tuple[str, ...] = ()
    # Deadlines as written in the workflow file ("48h"), None without.
    timeout: str | None = None
    remind_before: str | None = None

    @property
    def timeout_seconds(self) -> float | None:
        return durations.parse(self.timeout).total_seconds() if self.timeout else None

    @property
    def remind_before_seconds(self) -> float | None:
        return durations.parse(self.remind_before).total_seconds() if self.remind_before else None

    # Review screen only (never in the API's displayFields): the input fields that decided the
    # offer, shown beside the displayed ones (e.g. credit_score, income_bracket).
    context_fields: list[str] = []
    require_reject_reason: bool = False  # a row rejected on the review screen needs a reason


def approval_rules(definition: Definition) -> ApprovalRules:
    settings = approval_settings(definition)
    required = int(settings.get("requiredApprovals") or 1)
    return ApprovalRules(
        title=settings.get("title", "Review"),
        description=settings.get("description", ""),
        display_fields=list(settings.get("displayFields") or []),
        allow_bulk_approval=bool(settings.get("allowBulkApproval", True)),
        require_comment=bool(settings.get("requireComment", False)),
        required_approvals=required,
        allow_self_approval=bool(settings.get("allowSelfApproval", required == 1)),
        approver_groups=tuple(settings.get("approverGroups") or ()),
        timeout=settings.get("timeout"),
        remind_before=settings.get("remindBefore"),
        context_fields=list(settings.get("contextFields") or []),
        require_reject_reason=bool(settings.get("requireRejectReason", False)),
    )


def check_may_decide(rules: ApprovalRules, approver: Approver) -> None:
    """Forbidden unless the approver is in the step's approverGroups (or an admin)."""
    if approver.may_see(rules.approver_groups):
        return
    groups = ", ".join(rules.approver_groups)
    if approver.is_api_key:
        raise Forbidden(
            f"Only members of the approver groups {groups} can decide this execution: "
            "an API key is in no group"
        )
    raise Forbidden(f"Only members of the approver groups {groups} (and admins) can decide this "
                    "execution")  # fmt: skip


TIMED_OUT = "Approval timed out after {}"  # the execution's error and every row's reason


def shown_fields(rules: ApprovalRules, rows: list[RowData]) -> list[str]:
    """The fields a reviewer sees: the step's displayFields, or else every field of the rows
    (in the order they first appear), then the generated message and its compliance status."""
    if rules.display_fields:
        shown = rules.display_fields
    else:
        fields = list(dict.fromkeys(field for row in rows for field in row))
        shown = [*(f for f in fields if f not in ROW_EXTRAS), *ROW_EXTRAS]
    context = [f for f in rules.context_fields if f not in shown]
    # The context fields go before the message and its compliance status.
    extras = [f for f in shown if f in ROW_EXTRAS]
    return [*(f for f in shown if f not in ROW_EXTRAS), *context, *extras]


def _check_comment(rules: ApprovalRules, comment: str | None) -> None:
    """InvalidInput when the approval step has requireComment and no comment was given."""
    if comment and "\x00" in comment:
        raise InvalidInput("comment contains a NUL character (\\u0000)")
    if rules.require_comment and not (comment and comment.strip()):
        raise InvalidInput("A comment is required for this approval")


async def _definition(execution_id: UUID, api_key_id: UUID | None) -> Definition:
    """The execution's definition; NotFound if unknown (or not this key's, given one)."""
    if api_key_id is not None:
        execution = await executions.get_for_key(execution_id, api_key_id, with_definition=True)
        return execution.definition or {}
    return await executions.get_definition(execution_id)


class RowChoice(msgspec.Struct, frozen=True, kw_only=True):
    """One row's decision sent with an approval (the public API's `rows`), addressed by its
    position (`index`, as pending-approval numbers them) or by a `customer_id` unique in the
    execution. `reason` (reject only) goes verbatim into the results; `content` (approve only)
    replaces the generated message and is checked for compliance again."""

    decision: RowDecision
    index: int | None = None
    customer_id: str | None = None
    reason: str | None = None
    content: str | None = None


@dataclass(frozen=True)
class ApprovalOutcome:
    """What one approval came to: `final` when it was the last one needed (the run resumes)."""

    execution_id: UUID
    received: int
    required: int

    @property
    def final(self) -> bool:
        return self.received >= self.required


async def approve_execution(
    redis: ScriptClient | Redis,
    execution_id: UUID,
    approver: Approver,
    comment: str | None,
    *,
    api_key_id: UUID | None = None,
    once: idempotency.Once[ApprovalOutcome] | None = None,
    choices: Sequence[RowChoice] = (),
) -> ApprovalOutcome:
    """One approver's approval (rows in `choices` as they say). The last one of the step's
    `requiredApprovals` distinct approvers also approves every undecided row and queues the
    run from its next step; an earlier one is recorded and the execution keeps waiting. One
    transaction with the execution's row locked, so an approval and the deadline never both
    win. NotFound (also for another key's execution, given `api_key_id`), InvalidInput for a
    missing required comment or a choice that does not fit (naming it: nothing is decided),
    Forbidden outside the approverGroups or for an editor completing it without
    allowSelfApproval, Conflict unless pending approval, past the deadline, or for an
    approver who approved already. With `once` (an Idempotency-Key) the answer is stored in
    the decision's transaction, or replayed."""
    definition = await _definition(execution_id, api_key_id)
    rules = approval_rules(definition)
    _check_comment(rules, comment)
    _check_choices(choices)
    outcome, resume = await _approve(execution_id, comment, approver, once, choices, definition)
    if resume is not None:
        await queue.enqueue_run(redis, execution_id, *resume)  # after the commit
        await metrics.approval_decided(execution_id, "approved")
    return outcome


async def reject_execution(
    redis: ScriptClient | Redis,
    execution_id: UUID,
    approver: Approver,
    comment: str | None,
    *,
    api_key_id: UUID | None = None,
    once: idempotency.Once[UUID] | None = None,
) -> None:
    """Reject and stop (any one approver may); raises (and replays) as `approve_execution`."""
    rules = approval_rules(await _definition(execution_id, api_key_id))
    _check_comment(rules, comment)
    check_may_decide(rules, approver)
    for event_id in await _reject(execution_id, comment, approver.actor, once):
        await queue.enqueue_webhook(redis, event_id)  # after the commit
    await metrics.approval_decided(execution_id, "rejected")


class _Waiting(ReadModel, frozen=True):
    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("definition",)

    status: str
    overdue: bool
    approval_decided_by: str | None
    definition: Definition


async def _lock_waiting(execution_id: UUID) -> _Waiting:
    """Inside a transaction: the execution, locked FOR UPDATE (the deadline's time_out takes
    the same lock), if it waits for approval and its deadline has not passed; else NotFound
    or Conflict saying why."""
    rows = await Execution.raw(
        "SELECT status, approval_decided_by, definition, "
        "  COALESCE(approval_deadline <= now(), false) AS overdue "
        "FROM execution WHERE id = {} FOR UPDATE",
        execution_id,
    )
    if not rows:
        raise NotFound(executions.EXECUTION_NOT_FOUND)
    row = from_row(rows[0], _Waiting)
    if row.status != ExecutionStatus.PENDING_APPROVAL:
        raise executions.not_in_status(ExecutionStatus.PENDING_APPROVAL, row.status)
    if row.overdue:
        raise Conflict("The approval deadline has passed: the execution is being cancelled")
    return row


async def _approve(
    execution_id: UUID,
    comment: str | None,
    approver: Approver,
    once: idempotency.Once[ApprovalOutcome] | None,
    choices: Sequence[RowChoice] = (),
    definition: Definition | None = None,
) -> tuple[ApprovalOutcome, tuple[int, int] | None]:
    """One approval; with the last one needed, also the step index the run resumes at and
    its run attempt (for the job id)."""
    async with pool.engine().transaction() as transaction:
        await idempotency.begin(transaction.connection, once)
        waiting = await _lock_waiting(execution_id)
        rules = approval_rules(waiting.definition)
        check_may_decide(rules, approver)
        earlier = await ApprovalSubmission.raw(
            "SELECT approver FROM approval_submission WHERE execution = {}", execution_id
        )
        if any(row["approver"] == approver.key for row in earlier):
            raise Conflict(
                f"You have already approved this execution ({len(earlier)} of "
                f"{rules.required_approvals} approvals): another approver must approve it"
            )
        chosen: list[dict[str, Any]] = []
        withdrawn: list[str] = []
        noted: dict[str, Any] = {}  # the withdrawn approvals, for the audit entry's `after`
        if choices:
            chosen, changed = await _apply_choices(
                execution_id, choices, approver.label, waiting.definition
            )
            if changed:  # the others approved the rows as they were: this approval starts over
                withdrawn = await _withdraw_approvals(execution_id, noted)
        received = len(earlier) - len(withdrawn) + 1
        outcome = ApprovalOutcome(execution_id, received, rules.required_approvals)
        if outcome.final and not rules.allow_self_approval:
            await _refuse_self_approval(execution_id, approver)
        await ApprovalSubmission.insert(
            ApprovalSubmission(
                execution=execution_id,
                approver=approver.key,
                approver_label=approver.label,
                comment=comment,
            )
        )
        resume, by_default = None, 0
        if outcome.final:
            resume, by_default = await _resume(execution_id, comment, approver.label)
        before: dict[str, Any] = {"status": "pending_approval", "approvalStatus": "pending"}
        after: dict[str, Any] = {
            "status": "running" if outcome.final else "pending_approval",
            "approvalStatus": "approved" if outcome.final else "pending",
            "rowsApprovedUndecided": by_default,
            "rows": chosen,
        }
        if outcome.required > 1:  # maker-checker: which approval of how many this was
            before["approvalsReceived"] = len(earlier)
            after |= {"approvalsReceived": outcome.received, "approvalsRequired": outcome.required}
        after |= noted
        await audit.record(
            approver.actor,
            "execution.approved",
            "execution",
            execution_id,
            execution_id=execution_id,
            before=before,
            after=after,
            comment=comment,
        )
        await idempotency.finish(transaction.connection, once, outcome)
    return outcome, resume


async def _refuse_self_approval(execution_id: UUID, approver: Approver) -> None:
    edited = await ExecutionRow.raw(
        "SELECT position FROM execution_row WHERE execution = {} AND edited_by = {} "
        "ORDER BY position LIMIT 1",
        execution_id,
        approver.label,
    )
    if edited:
        raise Forbidden(
            f"You edited the message of row {edited[0]['position']}: another approver must "
            "complete this approval (the workflow does not allow self-approval)"
        )


async def _withdraw_approvals(execution_id: UUID, after: dict[str, Any]) -> list[str]:
    """Inside the transaction of a change to the rows (a decision or a message): every approval
    recorded so far is withdrawn, because its approver approved the rows as they were. Returns
    the approvers' labels, oldest approval first (for the dashboard's notice), and names them
    in the change's audit entry (`after`); none when nobody had approved yet."""
    gone = await ApprovalSubmission.raw(
        "WITH gone AS (DELETE FROM approval_submission WHERE execution = {} "
        "  RETURNING approver_label, created_at) "
        "SELECT approver_label FROM gone ORDER BY created_at",
        execution_id,
    )
    withdrawn = [str(row["approver_label"]) for row in gone]
    if withdrawn:
        after["approvalsWithdrawn"] = withdrawn
    return withdrawn


async def _resume(
    execution_id: UUID, comment: str | None, decided_by: str
) -> tuple[tuple[int, int], int]:
    """The last approval: the execution runs on, every undecided row approved. Returns the step
    index the run resumes at with its run attempt, and how many rows were approved by default."""
    rows = await Execution.raw(
        "UPDATE execution SET status = 'running', approval_status = 'approved', "
        "  approval_comment = {}, approval_decided_by = {}, approval_decided_at = now(), "
        "  updated_at = now() "
        "WHERE id = {} AND status = 'pending_approval' RETURNING current_step, run_attempt",
        comment,
        decided_by,
        execution_id,
    )
    by_default = await ExecutionRow.raw(
        "UPDATE execution_row SET decision = 'approved' "
        "WHERE execution = {} AND decision IS NULL RETURNING id",
        execution_id,
    )
    return (int(rows[0]["current_step"]), int(rows[0]["run_attempt"])), len(by_default)


class ApprovalProgress(ReadModel, frozen=True):
    """Who approved so far (maker-checker), for the review screen and pending-approval."""

    approver_label: str
    created_at: datetime


async def approvals_received(execution_id: UUID) -> list[ApprovalProgress]:
    rows = await ApprovalSubmission.raw(
        "SELECT approver_label, created_at FROM approval_submission WHERE execution = {} "
        "ORDER BY created_at",
        execution_id,
    )
    return [from_row(row, ApprovalProgress) for row in rows]


# The guarded UPDATE of a rejection, returning what its webhook event needs (a constant).
_REJECT = (
    "UPDATE execution AS e SET status = 'cancelled', approval_status = 'rejected', "
    "  approval_comment = {}, approval_decided_by = {}, approval_decided_at = now(), "
    "  completed_at = now(), updated_at = now() "
    "WHERE id = {} AND status = 'pending_approval' RETURNING "
)
REJECT_SQL = _REJECT + executions.EVENT_COLUMNS


async def _reject(
    execution_id: UUID, comment: str | None, actor: Actor, once: idempotency.Once[UUID] | None
) -> list[UUID]:
    """Reject and stop: `cancelled`, approvalStatus `rejected`, every row `rejected`, and the
    `execution.cancelled` webhook event recorded; returns the events to queue now."""
    async with pool.engine().transaction() as transaction:
        await idempotency.begin(transaction.connection, once)
        await _lock_waiting(execution_id)
        rows = await Execution.raw(REJECT_SQL, comment, actor.decided_by, execution_id)
        events, output = await _end_rows(execution_id, rows[0], REJECTED_REASON)
        await audit.record(
            actor,
            "execution.rejected",
            "execution",
            execution_id,
            execution_id=execution_id,
            before={"status": "pending_approval", "approvalStatus": "pending"},
            after={"status": "cancelled", "approvalStatus": "rejected"},
            comment=comment,
        )
        await idempotency.finish(transaction.connection, once, execution_id)
    metrics.execution_ended(rows[0], output)  # after the commit
    return events


async def _end_rows(
    execution_id: UUID, execution: dict[str, object], reason: str
) -> tuple[list[UUID], ExecutionOutput]:
    """After a rejection or a timeout: every row `rejected` with `reason`, the results written,
    the `execution.cancelled` event recorded; the events (to queue after the commit) and the
    results."""
    await ExecutionRow.raw(
        "UPDATE execution_row SET decision = COALESCE(decision, 'rejected'), "
        "  send_status = 'rejected', error = {} WHERE execution = {}",
        reason,
        execution_id,
    )
    output = await executions.build_output(execution_id)
    await Execution.raw(
        "UPDATE execution SET output = {}::jsonb WHERE id = {}", json.dumps(output), execution_id
    )
    return await executions.record_event(webhooks.CANCELLED, execution), output


# --- deadlines -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """What a transaction recorded, for the caller to queue after its commit."""

    events: list[UUID] = field(default_factory=list)
    notifications: list[UUID] = field(default_factory=list)
    deadline: datetime | None = None
    remind_at: datetime | None = None


async def enqueue(redis: ScriptClient | Redis, queued: Queued, execution_id: UUID) -> None:
    """After the commit: the webhook events, notifications, deadline and reminder jobs."""
    for event_id in queued.events:
        await queue.enqueue_webhook(redis, event_id)
    for notification_id in queued.notifications:
        await queue.enqueue_notification(redis, notification_id)
    if queued.deadline is not None:
        await queue.enqueue_deadline(redis, execution_id, queued.deadline)
    if queued.remind_at is not None:
        await queue.enqueue_reminder(redis, execution_id, queued.remind_at)


async def start_waiting(
    claim: executions.Claim,
    index: int,
    *,
    smtp: bool,
    step_before: tuple[int, StepResult] | None = None,
) -> Queued | None:
    """The worker's run reached its approval step (`index`): `pending_approval`
    (approvalStatus `pending`) with its deadline counted from now (the step's `timeout`) and the
    moment of its reminder (`remindBefore` that), the `execution.pending_approval` event and the
    approvers' notifications recorded, all in one transaction (one statement when there is
    neither to record: executions.transition_alone). `step_before` (the index and result of the
    step just done, not saved yet) is recorded in the same statement, as finish_step would
    have. None if this worker no longer holds the run (nothing saved)."""
    rules = approval_rules(claim.definition)
    timeout, remind = rules.timeout_seconds, rules.remind_before_seconds
    sql = (
        "UPDATE execution AS e SET "
        "  status = 'pending_approval', approval_status = 'pending', "
        "  approval_requested_at = now(), "
        "  approval_deadline = now() + make_interval(secs => $1), "
        "  approval_remind_at = now() + make_interval(secs => $2), "
        "  lease_token = NULL, lease_expires_at = NULL, updated_at = now(), "
        "  current_step = $5, step_results = CASE WHEN $6::jsonb IS NULL THEN step_results "
        "    ELSE step_results || jsonb_build_array($6::jsonb) END "
        "WHERE id = $3 AND lease_token = $4 AND status = 'running' AND current_step = $7"
    )
    returning = f"e.approval_deadline, e.approval_remind_at, {executions.EVENT_COLUMNS}"
    args = (
        timeout,
        timeout - remind if timeout and remind else None,  # NULL: no reminder
        claim.id,
        claim.token,
        index,
        None if step_before is None else json_text(step_before[1]),
        index if step_before is None else step_before[0],
    )
    if not notifications.any_channel(claim.definition, smtp=smtp):
        alone = await executions.transition_alone(
            claim, webhooks.PENDING_APPROVAL, sql, *args, returning=returning
        )
        if alone is not None:
            return Queued([], [], alone["approval_deadline"], alone["approval_remind_at"])
    async with pool.engine().transaction() as transaction:
        found = await transaction.connection.fetch(f"{sql} RETURNING {returning}", *args)
        if not found:
            return None
        row = dict(found[0])
        events = await executions.record_event(webhooks.PENDING_APPROVAL, row)
        sent = await notifications.record(
            claim.id, claim.definition, notifications.Kind.WAITING, smtp=smtp
        )
    return Queued(events, sent, row["approval_deadline"], row["approval_remind_at"])


class _Overdue(ReadModel, frozen=True):
    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("definition",)

    definition: Definition
    left: float | None


async def time_out(execution_id: UUID, *, smtp: bool) -> Queued | float | None:
    """The deadline job: an execution still waiting once its approval deadline passed ends
    `cancelled`, approvalStatus `rejected`, error `Approval timed out after <timeout>`, every
    row `rejected` with that reason, `execution.cancelled` and the approvers' notifications
    recorded; one transaction holding the row lock an approval takes, so exactly one wins.
    Returns what to queue, the seconds still left (the job came early), or None (decided)."""
    async with pool.engine().transaction():
        found = await Execution.raw(
            "SELECT definition, EXTRACT(EPOCH FROM approval_deadline - now())::float AS left "
            "FROM execution WHERE id = {} AND status = 'pending_approval' "
            "  AND approval_deadline IS NOT NULL FOR UPDATE",
            execution_id,
        )
        if not found:
            return None
        overdue = from_row(found[0], _Overdue)
        if overdue.left is not None and overdue.left > 0:
            return overdue.left
        reason = TIMED_OUT.format(approval_rules(overdue.definition).timeout or "its deadline")
        rows = await Execution.raw(
            "UPDATE execution AS e SET "  # noqa: S608 (constant columns, values bound)
            "  status = 'cancelled', approval_status = 'rejected', "
            "  error = {}, approval_decided_by = 'system', approval_decided_at = now(), "
            "  completed_at = now(), updated_at = now() "
            f"WHERE id = {{}} RETURNING {executions.EVENT_COLUMNS}",
            reason,
            execution_id,
        )
        events, output = await _end_rows(execution_id, rows[0], reason)
        await audit.record(
            Actor.system(),
            "execution.timed_out",
            "execution",
            execution_id,
            execution_id=execution_id,
            before={"status": "pending_approval", "approvalStatus": "pending"},
            after={"status": "cancelled", "approvalStatus": "rejected", "error": reason},
            comment=reason,
        )
        sent = await notifications.record(
            execution_id, overdue.definition, notifications.Kind.TIMED_OUT, smtp=smtp
        )
    metrics.execution_ended(rows[0], output)  # after the commit
    return Queued(events, sent)


# The reconciler's one query for waiting executions, on the partial index execution_approval_due
# (the same expression, WHERE the same): what is due first of each is its reminder while that
# is unsent (its moment is before the deadline; LEAST ignores NULL), else its deadline. So an
# execution reminded, or without a reminder, is found once its deadline passes, not before.
_DUE = (
    "SELECT id, approval_deadline <= now() AS overdue FROM execution "
    "WHERE status = 'pending_approval' AND approval_deadline IS NOT NULL "
    "  AND LEAST(approval_remind_at, approval_deadline) <= now() "
    "ORDER BY LEAST(approval_remind_at, approval_deadline) LIMIT 1000"
)


@dataclass(frozen=True)
class Enforced:
    """What one backstop pass did: executions timed out, and those reminded late."""

    timed_out: list[UUID] = field(default_factory=list)
    reminded: list[UUID] = field(default_factory=list)


async def enforce_due(redis: ScriptClient | Redis, *, smtp: bool) -> Enforced:
    """The reconciler's backstop of the deadline and reminder jobs (their moment passed while
    every worker was down, or the job was lost with Redis): time out every execution past its
    approval deadline, and remind the approvers of every one whose reminder is due and whose
    deadline has not passed (late, but before the deadline: after it, the timeout's
    notification says more). One indexed query; each is then done under the execution's row
    lock, so a job running at the same moment does it at most once with this."""
    enforced = Enforced()
    for row in await Execution.raw(_DUE):
        if row["overdue"]:
            queued = await time_out(row["id"], smtp=smtp)
            done = enforced.timed_out
        else:
            queued = await remind(row["id"], smtp=smtp)
            done = enforced.reminded
        if isinstance(queued, Queued):
            await enqueue(redis, queued, row["id"])
            done.append(row["id"])
    return enforced


async def remind(execution_id: UUID, *, smtp: bool) -> Queued | None:
    """The reminder (its job, or the reconciler's backstop): the approvers of an execution
    still waiting before its deadline are told again. Exactly once: the transaction clears
    `approval_remind_at` under the row lock, and finds nothing to do once it is clear (a job
    run twice, the job after the backstop). None when there was nothing to do."""
    async with pool.engine().transaction():
        found = await Execution.raw(
            "UPDATE execution SET approval_remind_at = NULL WHERE id = {} "
            "  AND status = 'pending_approval' AND approval_deadline > now() "
            "  AND approval_remind_at IS NOT NULL RETURNING definition",
            execution_id,
        )
        if not found:
            return None
        definition = from_row(found[0], _DefinitionRow).definition
        sent = await notifications.record(
            execution_id, definition, notifications.Kind.REMINDER, smtp=smtp
        )
    return Queued(notifications=sent)


class _DefinitionRow(ReadModel, frozen=True):
    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("definition",)

    definition: Definition


def _check_choices(choices: Sequence[RowChoice]) -> None:
    """What can be refused without reading the rows: InvalidInput naming `rows[i]`."""
    for number, choice in enumerate(choices):
        at = f"rows[{number}]"
        if (choice.index is None) == (choice.customer_id is None):
            raise InvalidInput(f"{at}: give either index or customerId")
        if choice.index is not None and choice.index < 0:
            raise InvalidInput(f"{at}.index must be 0 or more; got {choice.index}")
        if choice.decision == RowDecision.REJECTED and choice.content is not None:
            raise InvalidInput(f"{at}.content: only an approved row can be given new content")
        if choice.decision == RowDecision.APPROVED and choice.reason is not None:
            raise InvalidInput(f"{at}.reason: only a rejected row has a reason")
        for name, text in (("content", choice.content), ("reason", choice.reason)):
            if text is not None and "\x00" in text:
                raise InvalidInput(f"{at}.{name} contains a NUL character (\\u0000)")
        if choice.content is not None and not choice.content.strip():
            raise InvalidInput(f"{at}.content: the message cannot be empty")


class _ChoosableRow(ReadModel, frozen=True):
    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("data",)

    id: UUID
    position: int
    data: RowData
    generated_content: str | None
    original_content: str | None
    decision: str | None = None
    decision_reason: str | None = None


def _customer_id(row: _ChoosableRow) -> str | None:
    value = row.data.get("customerId")
    return None if value is None else str(value)


def _resolve(
    choices: Sequence[RowChoice], rows: list[_ChoosableRow]
) -> list[tuple[RowChoice, _ChoosableRow]]:
    """Each choice with the row it addresses; InvalidInput naming the first that fits none,
    several, or a row another choice already decides."""
    by_customer: dict[str, list[_ChoosableRow]] = {}
    for row in rows:
        if (customer := _customer_id(row)) is not None:
            by_customer.setdefault(customer, []).append(row)
    chosen: dict[int, int] = {}  # row position -> the choice deciding it
    resolved = []
    for number, choice in enumerate(choices):
        at = f"rows[{number}]"
        if choice.index is not None:
            if choice.index >= len(rows):
                raise InvalidInput(
                    f"{at}.index: {choice.index} is out of range (the execution has "
                    f"{len(rows)} rows, 0 to {len(rows) - 1})"
                )
            row = rows[choice.index]
        else:
            matches = by_customer.get(str(choice.customer_id), [])
            if not matches:
                raise InvalidInput(f"{at}.customerId: no row has customerId {choice.customer_id!r}")
            if len(matches) > 1:
                raise InvalidInput(
                    f"{at}.customerId: {choice.customer_id!r} is the customerId of "
                    f"{len(matches)} rows; address them by index"
                )
            row = matches[0]
        if row.position in chosen:
            raise InvalidInput(
                f"{at}: row {row.position} is already decided by rows[{chosen[row.position]}]"
            )
        chosen[row.position] = number
        resolved.append((choice, row))
    return resolved


async def _apply_choices(
    execution_id: UUID, choices: Sequence[RowChoice], decided_by: str, definition: Definition
) -> tuple[list[dict[str, Any]], bool]:
    """Inside the approval's transaction: every choice, or (InvalidInput) none of them; what
    each did, for the audit entry (an edit with its original and new text), and whether any
    changed a row (another decision or reason, or a new text) rather than repeat it."""
    stored = await ExecutionRow.raw(
        "SELECT id, position, data, generated_content, original_content, decision, "
        "  decision_reason FROM execution_row WHERE execution = {} ORDER BY position FOR UPDATE",
        execution_id,
    )
    rules = step_settings(definition, "compliance_check")
    done = []
    changed = False
    for choice, row in _resolve(choices, [from_row(r, _ChoosableRow) for r in stored]):
        changed = changed or (row.decision, row.decision_reason) != (
            choice.decision,
            choice.reason,
        )
        entry: dict[str, Any] = {"index": row.position, "decision": str(choice.decision)}
        if choice.reason is not None:
            entry["reason"] = choice.reason
        if choice.content is not None:
            await _save_edit(row, choice.content.strip(), decided_by, rules)
            entry["original"] = row.generated_content
            entry["content"] = choice.content.strip()
            changed = changed or choice.content.strip() != row.generated_content
        await _save_decision(row.id, choice.decision, decided_by, choice.reason)
        done.append(entry)
    return done, changed


async def _save_decision(
    row_id: UUID, decision: RowDecision, decided_by: str, reason: str | None = None
) -> None:
    """One row's decision: the review screen's and the API's alike."""
    await ExecutionRow.update(
        {
            ExecutionRow.decision: decision,
            ExecutionRow.decided_by: decided_by,
            ExecutionRow.decided_at: clock.now(),
            ExecutionRow.decision_reason: reason,
        }
    ).where(ExecutionRow.id == row_id)


class _Editable(Protocol):
    @property
    def id(self) -> UUID: ...
    @property
    def data(self) -> RowData: ...
    @property
    def generated_content(self) -> str | None: ...
    @property
    def original_content(self) -> str | None: ...


async def _save_edit(row: _Editable, content: str, edited_by: str, rules: StepSettings) -> None:
    """A row's new message, checked for compliance again with the workflow's own rules; the
    first original is kept. The review screen's and the API's alike."""
    verdict = compliance.check(rules, row.data, content)
    await ExecutionRow.update(
        {
            ExecutionRow.original_content: row.original_content or row.generated_content,
            ExecutionRow.generated_content: content,
            ExecutionRow.compliance_status: str(verdict.status),
            ExecutionRow.compliance_reasons: verdict.reasons,
            ExecutionRow.edited_by: edited_by,
            ExecutionRow.edited_at: clock.now(),
        }
    ).where(ExecutionRow.id == row.id)


class PendingApproval(msgspec.Struct, frozen=True):
    rows: list[RowData]  # each row through the step's display fields
    rules: ApprovalRules
    approvals_received: int = 0
    approval_deadline: datetime | None = None

    @property
    def progress(self) -> str:
        return f"{self.approvals_received} of {self.rules.required_approvals} approvals"


async def pending_approval_data(execution: executions.ExecutionView) -> PendingApproval:
    """public-api.md "Get Pending Approval Data": rows through the step's displayFields.
    `execution` must have been read with its definition."""
    if execution.status != ExecutionStatus.PENDING_APPROVAL:
        raise executions.not_in_status(ExecutionStatus.PENDING_APPROVAL, execution.status)
    rules = approval_rules(execution.definition or {})
    rows = (
        await ExecutionRow.select(
            ExecutionRow.data,
            ExecutionRow.generated_content,
            ExecutionRow.compliance_status,
            ExecutionRow.compliance_reasons,
        )
        .where(ExecutionRow.execution == execution.id)
        .order_by(ExecutionRow.position)
    )
    shown = []
    for index, row in enumerate(rows):
        read = from_row(row, _ApprovalRow)
        values = {
            **read.data,
            "generated_content": read.generated_content,
            "compliance_status": read.compliance_status,
        }
        fields = rules.display_fields
        entry = {field: values.get(field) for field in fields} if fields else values
        # Added beside the contract: how a per-row decision addresses the row (RowChoice),
        # and why a row failed compliance (empty when it passed): it will not be sent.
        entry["index"] = index
        entry["complianceReasons"] = list(read.compliance_reasons or [])
        shown.append(entry)
    progress = await Execution.raw(
        "SELECT approval_deadline, (SELECT count(*) FROM approval_submission s "
        "  WHERE s.execution = e.id) AS received FROM execution e WHERE e.id = {}",
        execution.id,
    )
    return PendingApproval(
        rows=shown,
        rules=rules,
        approvals_received=int(progress[0]["received"]) if progress else 0,
        approval_deadline=progress[0]["approval_deadline"] if progress else None,
    )


class _ApprovalRow(ReadModel, frozen=True):
    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("data", "compliance_reasons")

    data: RowData
    generated_content: str | None
    compliance_status: str | None
    compliance_reasons: list[str] | None


# --- row by row, for the review screen ------------------------------------------------------


class WaitingExecution(ReadModel, frozen=True):
    """One entry of the approvals queue."""

    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("definition",)

    id: UUID
    workflow: str
    created_at: datetime
    updated_at: datetime
    key_name: str
    row_count: int
    failing: int  # rows that failed compliance
    decided: int
    approvals: int  # approvals received so far (maker-checker)
    approval_deadline: datetime | None
    queue_at: datetime  # its place in the queue: the deadline, else the start 1,000 years on
    seconds_left: float | None
    definition: Definition

    @property
    def required_approvals(self) -> int:
        return approval_rules(self.definition).required_approvals


# The queue's order: the soonest deadline first, those without one after every deadline, oldest
# first (`queue_at`: the deadline, or the start 1,000 years on). A page is the next LIMIT n of
# the waiting executions in that order after (or before) a link's (queue_at, id): a few hundred
# index entries of execution_status_created (status = 'pending_approval'), never a join over
# every waiting run's rows; the counts come per execution of the page (the partial index
# execution_row_failed, unique_execution_position). Only what the approver may decide: their
# groups against the approval step's approverGroups (admins and empty lists: everything).
_QUEUE_AT = "COALESCE(approval_deadline, created_at + interval '1000 years')"
_WAITING = """
SELECT e.id, e.workflow, e.created_at, e.updated_at, k.name AS key_name, e.row_count,
       e.definition, e.approval_deadline, e.queue_at,
       GREATEST(EXTRACT(EPOCH FROM e.approval_deadline - now()), 0)::float AS seconds_left,
       (SELECT count(*) FROM execution_row r
        WHERE r.execution = e.id AND r.compliance_status = 'failed') AS failing,
       (SELECT count(*) FROM execution_row r
        WHERE r.execution = e.id AND r.decision IS NOT NULL) AS decided,
       (SELECT count(*) FROM approval_submission s WHERE s.execution = e.id) AS approvals
FROM (SELECT id, workflow, created_at, updated_at, api_key, row_count, definition,
             approval_deadline, {queue_at} AS queue_at
      FROM execution
      WHERE status = 'pending_approval' AND {may_decide} {after}
      ORDER BY {queue_at} {direction}, id {direction} LIMIT $1) AS e
JOIN api_key k ON k.id = e.api_key
ORDER BY e.queue_at, e.id
"""
_MAY_DECIDE = f"($2 OR {approvers.may_see_sql('$3')})"
_WAITING_FIRST = _WAITING.format(queue_at=_QUEUE_AT, may_decide=_MAY_DECIDE, after="", direction="")
_WAITING_NEWER = _WAITING.format(
    queue_at=_QUEUE_AT, may_decide=_MAY_DECIDE, after=f"AND ({_QUEUE_AT}, id) > ($4, $5)",
    direction="",
)  # fmt: skip
_WAITING_OLDER = _WAITING.format(
    queue_at=_QUEUE_AT, may_decide=_MAY_DECIDE, after=f"AND ({_QUEUE_AT}, id) < ($4, $5)",
    direction="DESC",
)  # fmt: skip
_WAITING_COUNT = (
    "SELECT count(*) FROM (SELECT 1 FROM execution "  # noqa: S608 (constant parts only)
    f"WHERE status = 'pending_approval' AND {_MAY_DECIDE} LIMIT $1) s"
)


async def list_waiting(
    approver: Approver,
    per_page: int,
    older: list_pages.Position | None = None,
    newer: list_pages.Position | None = None,
) -> list_pages.Page[WaitingExecution]:
    """Executions waiting for approval that `approver` may decide (the approverGroups), the
    soonest deadline first, those without one last (oldest first), a page at a time with their
    row counts: the first page, or the one just after `newer`, or just before `older` (a
    position's `created_at` is the entry's place in that order, `queue_at`)."""
    groups = list(approver.groups)
    has_older = False
    records = None
    async with pool.connection() as connection:
        scope = (approver.is_admin, groups)
        if newer is not None:
            found = await connection.fetch(
                _WAITING_NEWER, per_page + 1, *scope, newer.created_at, newer.id
            )
            records, has_older = found[:per_page], True
            has_newer = len(found) > per_page
        elif older is not None:
            found = await connection.fetch(
                _WAITING_OLDER, per_page + 1, *scope, older.created_at, older.id
            )
            if len(found) > per_page:  # not yet back at the first page
                records, has_older, has_newer = found[1:], True, True
        if records is None:
            found = await connection.fetch(_WAITING_FIRST, per_page + 1, *scope)
            records, has_newer = found[:per_page], len(found) > per_page
        total = await list_pages.capped_count(
            connection, _WAITING_COUNT, list_pages.COUNT_CAP + 1, *scope
        )
    entries = [from_row(dict(record), WaitingExecution) for record in records]

    def position(entry: WaitingExecution) -> list_pages.Position:
        return list_pages.Position(created_at=entry.queue_at, id=entry.id)

    return list_pages.Page(
        entries=entries,
        # An empty page (what was after its link got decided meanwhile) still links back.
        older=(position(entries[0]) if entries else newer) if has_older else None,
        newer=position(entries[-1]) if entries and has_newer else None,
        total=total,
    )


class _Pending(ReadModel, frozen=True):
    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("definition",)

    id: UUID
    status: str
    approval_decided_by: str | None
    definition: Definition


async def _lock_pending(execution_id: UUID) -> _Pending:
    """Inside a transaction: the execution, share-locked, if it still waits for approval.
    `approve`/`reject` update the same row, so a decision can never land after them."""
    rows = await Execution.raw(
        "SELECT id, status, approval_decided_by, definition FROM execution WHERE id = {} FOR SHARE",
        execution_id,
    )
    if not rows:
        raise NotFound(executions.EXECUTION_NOT_FOUND)
    row = from_row(rows[0], _Pending)
    if row.status != ExecutionStatus.PENDING_APPROVAL:
        by = f" by {row.approval_decided_by}" if row.approval_decided_by else ""
        raise Conflict(f"This execution is no longer waiting for approval: it was decided{by}")
    return row


async def _row(execution_id: UUID, row_id: UUID) -> RowView:
    row = (
        await ExecutionRow.select()
        .where(ExecutionRow.id == row_id, ExecutionRow.execution == execution_id)
        .first()
    )
    if row is None:
        raise NotFound("Row not found")
    return from_row(row, RowView)


# The review screen's "no decision" (its undo puts a row back to it); never an API value.
UNDECIDED = "undecided"


def parse_row_decision(decision: str) -> RowDecision | None:
    """A row decision from the review screen's form: approved, rejected or `undecided` (None).
    InvalidInput for anything else."""
    if decision == UNDECIDED:
        return None
    try:
        return RowDecision(decision)
    except ValueError:
        raise InvalidInput("Decision must be approved or rejected") from None


def _check_decision(decision: str) -> RowDecision:
    checked = parse_row_decision(decision)
    if checked is None:
        raise InvalidInput("Decision must be approved or rejected")
    return checked


def fails_compliance(row: RowView) -> bool:
    return row.compliance_status == ComplianceStatus.FAILED


def skipped_because(row: RowView) -> str:
    """Why a row failing compliance is not sent, as the review screen says it."""
    return "; ".join(row.compliance_reasons) or "it failed the compliance check"


@dataclass(frozen=True)
class RowChange:
    """A row's decision or edit, saved: the row as it is now, and the approvals that change
    withdrew (their approvers' labels; empty when none had been given)."""

    row: RowView
    withdrawn: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BulkDecision:
    """A bulk decision, saved: how many rows it decided and the approvals it withdrew."""

    rows: int
    withdrawn: list[str] = field(default_factory=list)


async def decide_row(
    execution_id: UUID,
    row_id: UUID,
    decision: str,
    seen: str | None,
    approver: Approver,
    *,
    reason: str | None = None,
) -> RowChange:
    """Save one row's decision at once (`undecided` clears it: the review screen's undo).
    `seen` is the decision the reviewer saw ("" for none): if someone else changed it
    meanwhile, Conflict instead of a silent overwrite. A row failing compliance cannot be
    approved (Conflict: it will be skipped whatever the decision); a reject needs a `reason`
    when the approval step has requireRejectReason (InvalidInput). A change (not the same
    decision again) withdraws the approvals already given, in the same transaction."""
    checked = parse_row_decision(decision)
    reason = (reason or "").strip() or None
    if reason is not None and "\x00" in reason:
        raise InvalidInput("The reason contains a NUL character")
    decided_by = approver.label
    async with pool.engine().transaction():
        execution = await _lock_pending(execution_id)
        rules = approval_rules(execution.definition)
        check_may_decide(rules, approver)
        current = await _row(execution_id, row_id)
        if (current.decision or "") != (seen or ""):
            who = current.decided_by or "another reviewer"
            raise Conflict(
                f"{who} changed this row meanwhile (it is now {current.decision or 'undecided'})"
            )
        if checked == RowDecision.APPROVED and fails_compliance(current):
            raise Conflict(
                f"This row cannot be approved: it will be skipped: {skipped_because(current)}"
            )
        if checked == RowDecision.REJECTED and rules.require_reject_reason and reason is None:
            raise InvalidInput("Give a reason to reject this row")
        after: dict[str, Any] = {"index": current.position, "decision": None}
        kept = reason if checked == RowDecision.REJECTED else None
        if checked is None:  # the review screen's undo
            await _clear_decision(row_id)
        else:
            await _save_decision(row_id, checked, decided_by, kept)
            after = {"index": current.position, "decision": str(checked)}
            if kept:
                after["reason"] = kept
        withdrawn: list[str] = []
        if (current.decision, current.decision_reason) != (checked, kept):
            withdrawn = await _withdraw_approvals(execution_id, after)
        await audit.record(
            approver.actor,
            f"row.{checked or 'undecided'}",
            "execution_row",
            row_id,
            execution_id=execution_id,
            before={"index": current.position, "decision": current.decision},
            after=after,
        )
    return RowChange(await _row(execution_id, row_id), withdrawn)


async def _clear_decision(row_id: UUID) -> None:
    await ExecutionRow.update(
        {
            ExecutionRow.decision: None,
            ExecutionRow.decided_by: None,
            ExecutionRow.decided_at: None,
            ExecutionRow.decision_reason: None,
        }
    ).where(ExecutionRow.id == row_id)


async def decide_all_rows(execution_id: UUID, decision: str, approver: Approver) -> BulkDecision:
    """Bulk decision (only when the approval step allows it): every row WITHOUT a decision gets
    `decision`; rows already approved or rejected keep theirs, and rows failing compliance are
    never approved (they stay undecided: they will be skipped). Returns how many rows were
    decided; when any was, the approvals already given are withdrawn with it."""
    checked = _check_decision(decision)
    decided_by = approver.label
    async with pool.engine().transaction():
        execution = await _lock_pending(execution_id)
        rules = approval_rules(execution.definition)
        check_may_decide(rules, approver)
        if not rules.allow_bulk_approval:
            raise Conflict("This workflow does not allow bulk approval")
        rows = await ExecutionRow.raw(
            "UPDATE execution_row SET decision = {}, decided_by = {}, decided_at = now() "
            "WHERE execution = {} AND decision IS NULL "
            "  AND ({} = 'rejected' OR compliance_status IS DISTINCT FROM 'failed') "
            "RETURNING id",
            str(checked),
            decided_by,
            execution_id,
            str(checked),
        )
        after: dict[str, Any] = {"decision": str(checked), "rows": len(rows), "bulk": True}
        withdrawn = await _withdraw_approvals(execution_id, after) if rows else []
        await audit.record(
            approver.actor,
            f"row.{checked}",
            "execution",
            execution_id,
            execution_id=execution_id,
            after=after,
        )
    return BulkDecision(len(rows), withdrawn)


# --- the review screen's triage ---------------------------------------------------------------

# The filter tabs, in the order the screen shows them (`?show=` takes these names).
TABS = ("failing", "undecided", "edited", "rejected", "all")
DEFAULT_TAB = "all"


def in_tab(row: RowView, tab: str) -> bool:
    """Whether `row` belongs under `tab`. Undecided: no decision yet and passing compliance
    (a failing row needs none: it is skipped whatever is decided)."""
    if tab == "failing":
        return fails_compliance(row)
    if tab == "undecided":
        return row.decision is None and not fails_compliance(row)
    if tab == "edited":
        return row.original_content is not None
    if tab == "rejected":
        return row.decision == RowDecision.REJECTED
    return True


class ReviewCounts(msgspec.Struct, frozen=True):
    """What submitting would do now, and how many rows each tab holds. Every row is one of
    will_send, skipped (failing compliance, not rejected) or rejected; undecided rows are
    approved by the submit, as with the API's approve."""

    total: int
    approved: int
    rejected: int
    undecided: int
    failing: int
    edited: int
    will_send: int
    skipped: int

    def tab(self, name: str) -> int:
        return {
            "failing": self.failing,
            "undecided": self.undecided,
            "edited": self.edited,
            "rejected": self.rejected,
        }.get(name, self.total)


def review_counts(rows: Sequence[RowView]) -> ReviewCounts:
    rejected = sum(1 for r in rows if r.decision == RowDecision.REJECTED)
    skipped = sum(1 for r in rows if fails_compliance(r) and r.decision != RowDecision.REJECTED)
    return ReviewCounts(
        total=len(rows),
        approved=sum(
            1 for r in rows if r.decision == RowDecision.APPROVED and not fails_compliance(r)
        ),
        rejected=rejected,
        undecided=sum(1 for r in rows if in_tab(r, "undecided")),
        failing=sum(1 for r in rows if fails_compliance(r)),
        edited=sum(1 for r in rows if r.original_content is not None),
        will_send=len(rows) - rejected - skipped,
        skipped=skipped,
    )


async def check_can_decide(execution_id: UUID, comment: str | None, *, comment_given: bool) -> None:
    """Before a confirmation step is shown for a whole-execution decision: NotFound, Conflict
    unless pending approval, and (when a comment was given at all) the comment rule."""
    await executions.require_status(execution_id, ExecutionStatus.PENDING_APPROVAL)
    if comment_given:
        _check_comment(approval_rules(await _definition(execution_id, None)), comment)


async def edit_row(execution_id: UUID, row_id: UUID, content: str, approver: Approver) -> RowChange:
    """Replace a row's generated message before approval; the first original is kept and the
    new text is checked for compliance again with the workflow's own rules. A new text (not
    the same one again) withdraws the approvals already given, in the same transaction."""
    content = content.strip()
    if not content:
        raise InvalidInput("The message cannot be empty")
    if "\x00" in content:
        raise InvalidInput("The message contains a NUL character")
    async with pool.engine().transaction():
        execution = await _lock_pending(execution_id)
        check_may_decide(approval_rules(execution.definition), approver)
        row = await _row(execution_id, row_id)
        await _save_edit(
            row, content, approver.label, step_settings(execution.definition, "compliance_check")
        )
        after: dict[str, Any] = {"index": row.position, "content": content}
        withdrawn = []
        if content != row.generated_content:
            withdrawn = await _withdraw_approvals(execution_id, after)
        await audit.record(
            approver.actor,
            "row.edited",
            "execution_row",
            row_id,
            execution_id=execution_id,
            before={"index": row.position, "content": row.generated_content},
            after=after,
        )
    return RowChange(await _row(execution_id, row_id), withdrawn)
