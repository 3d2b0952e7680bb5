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
from datetime import datetime
from typing import ClassVar, Protocol
from uuid import UUID

import msgspec
from redis.asyncio import Redis

from web.domain import clock, compliance, executions, idempotency, pool, queue, webhooks
from web.domain.errors import Conflict, InvalidInput, NotFound
from web.domain.execution_rows import RowView
from web.domain.script_client import ScriptClient
from web.domain.statuses import ComplianceStatus, ExecutionStatus, RowDecision
from web.domain.tables import Execution, ExecutionRow
from web.domain.types import Definition, ReadModel, RowData, StepSettings, from_row
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
    # Review screen only (never in the API's displayFields): the input fields that decided the
    # offer, shown beside the displayed ones (e.g. credit_score, income_bracket).
    context_fields: list[str] = []
    require_reject_reason: bool = False  # a row rejected on the review screen needs a reason


def approval_rules(definition: Definition) -> ApprovalRules:
    settings = approval_settings(definition)
    return ApprovalRules(
        title=settings.get("title", "Review"),
        description=settings.get("description", ""),
        display_fields=list(settings.get("displayFields") or []),
        allow_bulk_approval=bool(settings.get("allowBulkApproval", True)),
        require_comment=bool(settings.get("requireComment", False)),
        context_fields=list(settings.get("contextFields") or []),
        require_reject_reason=bool(settings.get("requireRejectReason", False)),
    )


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


async def approve_execution(
    redis: ScriptClient | Redis,
    execution_id: UUID,
    decided_by: str,
    comment: str | None,
    *,
    api_key_id: UUID | None = None,
    once: idempotency.Once[UUID] | None = None,
    choices: Sequence[RowChoice] = (),
) -> None:
    """Approve (rows in `choices` as they say, other undecided rows approved) and queue the run
    from its next step, all in one transaction. NotFound (also for another key's execution,
    given `api_key_id`), InvalidInput for a missing required comment or a choice that does not
    fit (naming it: nothing is decided), Conflict unless pending approval. With `once` (an
    Idempotency-Key) the answer is stored in the decision's transaction, or replayed."""
    definition = await _definition(execution_id, api_key_id)
    _check_comment(approval_rules(definition), comment)
    _check_choices(choices)
    step, attempt = await _approve(execution_id, comment, decided_by, once, choices, definition)
    await queue.enqueue_run(redis, execution_id, step, attempt)  # after the commit


async def reject_execution(
    redis: ScriptClient | Redis,
    execution_id: UUID,
    decided_by: str,
    comment: str | None,
    *,
    api_key_id: UUID | None = None,
    once: idempotency.Once[UUID] | None = None,
) -> None:
    """Reject and stop; raises (and replays) as `approve_execution` does."""
    _check_comment(approval_rules(await _definition(execution_id, api_key_id)), comment)
    for event_id in await _reject(execution_id, comment, decided_by, once):
        await queue.enqueue_webhook(redis, event_id)  # after the commit


async def _approve(
    execution_id: UUID,
    comment: str | None,
    decided_by: str,
    once: idempotency.Once[UUID] | None,
    choices: Sequence[RowChoice] = (),
    definition: Definition | None = None,
) -> tuple[int, int]:
    """Approve; returns the step index the run resumes at and its run attempt (for the job id).
    Conflict unless pending approval."""
    async with pool.engine().transaction() as transaction:
        await idempotency.begin(transaction.connection, once)
        rows = await Execution.raw(
            "UPDATE execution SET status = 'running', approval_status = 'approved', "
            "  approval_comment = {}, approval_decided_by = {}, approval_decided_at = now(), "
            "  updated_at = now() "
            "WHERE id = {} AND status = 'pending_approval' RETURNING current_step, run_attempt",
            comment,
            decided_by,
            execution_id,
        )
        if not rows:
            await executions.require_status(execution_id, ExecutionStatus.PENDING_APPROVAL)
        if choices:
            await _apply_choices(execution_id, choices, decided_by, definition or {})
        await ExecutionRow.raw(
            "UPDATE execution_row SET decision = 'approved' "
            "WHERE execution = {} AND decision IS NULL",
            execution_id,
        )
        await idempotency.finish(transaction.connection, once, execution_id)
    return int(rows[0]["current_step"]), int(rows[0]["run_attempt"])


# The guarded UPDATE of a rejection, returning what its webhook event needs (a constant).
_REJECT = (
    "UPDATE execution AS e SET status = 'cancelled', approval_status = 'rejected', "
    "  approval_comment = {}, approval_decided_by = {}, approval_decided_at = now(), "
    "  completed_at = now(), updated_at = now() "
    "WHERE id = {} AND status = 'pending_approval' RETURNING "
)
REJECT_SQL = _REJECT + executions.EVENT_COLUMNS


async def _reject(
    execution_id: UUID, comment: str | None, decided_by: str, once: idempotency.Once[UUID] | None
) -> list[UUID]:
    """Reject and stop: `cancelled`, approvalStatus `rejected`, every row `rejected`, and the
    `execution.cancelled` webhook event recorded; returns the events to queue now."""
    async with pool.engine().transaction() as transaction:
        await idempotency.begin(transaction.connection, once)
        rows = await Execution.raw(
            REJECT_SQL,
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
        events = await executions.record_event(webhooks.CANCELLED, rows[0])
        await idempotency.finish(transaction.connection, once, execution_id)
    return events


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
) -> None:
    """Inside the approval's transaction: every choice, or (InvalidInput) none of them."""
    stored = await ExecutionRow.raw(
        "SELECT id, position, data, generated_content, original_content FROM execution_row "
        "WHERE execution = {} ORDER BY position FOR UPDATE",
        execution_id,
    )
    rules = step_settings(definition, "compliance_check")
    for choice, row in _resolve(choices, [from_row(r, _ChoosableRow) for r in stored]):
        if choice.content is not None:
            await _save_edit(row, choice.content.strip(), decided_by, rules)
        await _save_decision(row.id, choice.decision, decided_by, choice.reason)


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
    return PendingApproval(rows=shown, rules=rules)


class _ApprovalRow(ReadModel, frozen=True):
    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("data", "compliance_reasons")

    data: RowData
    generated_content: str | None
    compliance_status: str | None
    compliance_reasons: list[str] | None


# --- row by row, for the review screen ------------------------------------------------------


class WaitingExecution(ReadModel, frozen=True):
    """One entry of the approvals queue."""

    id: UUID
    workflow: str
    created_at: datetime
    updated_at: datetime
    key_name: str
    row_count: int
    failing: int  # rows that failed compliance
    decided: int


async def list_waiting() -> list[WaitingExecution]:
    """Executions waiting for approval, oldest first, with their row counts."""
    rows = await Execution.raw(
        "SELECT e.id, e.workflow, e.created_at, e.updated_at, k.name AS key_name, "
        "  e.row_count, "
        "  COUNT(r.id) FILTER (WHERE r.compliance_status = 'failed') AS failing, "
        "  COUNT(r.id) FILTER (WHERE r.decision IS NOT NULL) AS decided "
        "FROM execution e JOIN api_key k ON k.id = e.api_key "
        "LEFT JOIN execution_row r ON r.execution = e.id "
        "WHERE e.status = 'pending_approval' "
        "GROUP BY e.id, k.name ORDER BY e.created_at"
    )
    return [from_row(row, WaitingExecution) for row in rows]


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


async def decide_row(
    execution_id: UUID,
    row_id: UUID,
    decision: str,
    seen: str | None,
    decided_by: str,
    *,
    reason: str | None = None,
) -> RowView:
    """Save one row's decision at once (`undecided` clears it: the review screen's undo).
    `seen` is the decision the reviewer saw ("" for none): if someone else changed it
    meanwhile, Conflict instead of a silent overwrite. A row failing compliance cannot be
    approved (Conflict: it will be skipped whatever the decision); a reject needs a `reason`
    when the approval step has requireRejectReason (InvalidInput)."""
    checked = parse_row_decision(decision)
    reason = (reason or "").strip() or None
    if reason is not None and "\x00" in reason:
        raise InvalidInput("The reason contains a NUL character")
    async with pool.engine().transaction():
        execution = await _lock_pending(execution_id)
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
        rules = approval_rules(execution.definition)
        if checked == RowDecision.REJECTED and rules.require_reject_reason and reason is None:
            raise InvalidInput("Give a reason to reject this row")
        if checked is None:
            await _clear_decision(row_id)
        else:
            kept = reason if checked == RowDecision.REJECTED else None
            await _save_decision(row_id, checked, decided_by, kept)
    return await _row(execution_id, row_id)


async def _clear_decision(row_id: UUID) -> None:
    await ExecutionRow.update(
        {
            ExecutionRow.decision: None,
            ExecutionRow.decided_by: None,
            ExecutionRow.decided_at: None,
            ExecutionRow.decision_reason: None,
        }
    ).where(ExecutionRow.id == row_id)


async def decide_all_rows(execution_id: UUID, decision: str, decided_by: str) -> int:
    """Bulk decision (only when the approval step allows it): every row WITHOUT a decision gets
    `decision`; rows already approved or rejected keep theirs, and rows failing compliance are
    never approved (they stay undecided: they will be skipped). Returns how many rows were
    decided."""
    checked = _check_decision(decision)
    async with pool.engine().transaction():
        execution = await _lock_pending(execution_id)
        if not approval_rules(execution.definition).allow_bulk_approval:
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
    return len(rows)


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


async def edit_row(execution_id: UUID, row_id: UUID, content: str, edited_by: str) -> RowView:
    """Replace a row's generated message before approval; the first original is kept and the
    new text is checked for compliance again with the workflow's own rules."""
    content = content.strip()
    if not content:
        raise InvalidInput("The message cannot be empty")
    if "\x00" in content:
        raise InvalidInput("The message contains a NUL character")
    async with pool.engine().transaction():
        execution = await _lock_pending(execution_id)
        row = await _row(execution_id, row_id)
        await _save_edit(
            row, content, edited_by, step_settings(execution.definition, "compliance_check")
        )
    return await _row(execution_id, row_id)
