"""Reviewer notifications: who is told that an execution waits for approval (when it starts
waiting, `remindBefore` its deadline, and when it timed out), what they are told, and the log.

A notification is a row (`notification`, one per recipient and channel) written in the
transaction of what it reports, like webhook events; a job of its own sends it (worker/notify.py)
with retries, recording every attempt (`notification_attempt`), so a failing mail server never
delays or fails the run. Recipients are the active reviewers and admins, only those in the
approval step's `approverGroups` when it names any. Email addresses are personal data: they are
stored (the execution's page shows them) and never logged. Imports only web.domain.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar
from uuid import UUID

from web.domain import clock, pool
from web.domain.tables import Notification, NotificationAttempt, User
from web.domain.types import Definition, ReadModel, from_row
from web.domain.workflows import approval_settings


class Kind(StrEnum):
    WAITING = "waiting"
    REMINDER = "reminder"
    TIMED_OUT = "timed_out"


class Channel(StrEnum):
    EMAIL = "email"
    SLACK = "slack"


def _targets(definition: Definition) -> tuple[bool, str | None, list[str]]:
    """(email wanted, the Slack URL or None, approverGroups) of the execution's approval step."""
    settings = approval_settings(definition)
    notify = settings.get("notifications") or {}
    return (
        bool(notify.get("email", True)),
        notify.get("slackWebhookUrl"),
        list(settings.get("approverGroups") or []),
    )


def any_channel(definition: Definition, *, smtp: bool) -> bool:
    """Whether `record` may notify anyone of this execution: email (with an SMTP server) to its
    approvers, or its Slack URL. Without either a transition records no notification."""
    email, slack, _ = _targets(definition)
    return bool((email and smtp) or slack)


async def approver_emails(groups: list[str]) -> list[str]:
    """Active reviewers and admins, only members of `groups` when there are any."""
    query = User.select(User.email).where(
        User.active.eq(True), User.role.is_in(["reviewer", "admin"])
    )
    rows = await query.order_by(User.email)
    if groups:
        members = await User.raw(
            "SELECT email FROM dashboard_user WHERE active AND role IN ('reviewer', 'admin') "
            "AND groups && {}::varchar[] ORDER BY email",
            groups,
        )
        rows = members
    return [str(row["email"]) for row in rows]


async def record(
    execution_id: UUID, definition: Definition, kind: Kind, *, smtp: bool
) -> list[UUID]:
    """Inside the transaction of what is reported: one notification per approver (email, when
    `smtp` (an SMTP server is configured) and the step does not turn email off) and one for
    the Slack URL, once per execution, kind, channel and recipient. Returns those to queue."""
    email, slack, groups = _targets(definition)
    targets: list[tuple[Channel, str]] = []
    if email and smtp:
        targets += [(Channel.EMAIL, address) for address in await approver_emails(groups)]
    if slack:
        targets.append((Channel.SLACK, slack))
    created = []
    for channel, recipient in targets:
        rows = await Notification.raw(
            "INSERT INTO notification (id, execution, kind, channel, recipient, status, "
            "  attempts, created_at) "
            "VALUES (gen_random_uuid(), {}, {}, {}, {}, 'pending', 0, now()) "
            "ON CONFLICT (execution, kind, channel, recipient) DO NOTHING RETURNING id",
            execution_id,
            str(kind),
            str(channel),
            recipient,
        )
        created += [row["id"] for row in rows]
    return created


class ToSend(ReadModel, frozen=True):
    """One notification with what its message says about the execution."""

    id: UUID
    execution: UUID
    kind: str
    channel: str
    recipient: str
    status: str
    attempts: int
    total_attempts: int
    workflow: str
    workflow_name: str
    row_count: int
    failing: int
    approval_deadline: datetime | None
    error: str | None


async def load(notification_id: UUID) -> ToSend | None:
    rows = await Notification.raw(
        "SELECT n.id, n.execution, n.kind, n.channel, n.recipient, n.status, n.attempts, "
        "  (SELECT count(*) FROM notification_attempt a WHERE a.notification = n.id) "
        "    AS total_attempts, "
        "  e.workflow, COALESCE(e.definition->>'name', e.workflow) AS workflow_name, "
        "  e.row_count, e.approval_deadline, e.error, "
        "  (SELECT count(*) FROM execution_row r WHERE r.execution = e.id "
        "    AND r.compliance_status = 'failed') AS failing "
        "FROM notification n JOIN execution e ON e.id = n.execution WHERE n.id = {}",
        notification_id,
    )
    return from_row(rows[0], ToSend) if rows else None


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    html: str


def review_link(public_url: str, execution_id: UUID) -> str:
    return f"{public_url.rstrip('/')}/dashboard/approvals/{execution_id}"


def compose(n: ToSend, public_url: str) -> Message:
    """The message of a notification: the workflow, row counts, failing-compliance count, the
    deadline and the link to the review screen (plain text and HTML alike)."""
    link = review_link(public_url, n.execution)
    deadline = clock.iso(n.approval_deadline) or "none"
    if n.kind == Kind.TIMED_OUT:
        subject = f"Approval timed out: {n.workflow_name}"
        why = n.error or "Approval timed out"
        lead = f"An execution of {n.workflow_name} was cancelled: {why}."
    elif n.kind == Kind.REMINDER:
        subject = f"Reminder: approval due {deadline}: {n.workflow_name}"
        lead = f"An execution of {n.workflow_name} still waits for approval."
    else:
        subject = f"Approval needed: {n.workflow_name}"
        lead = f"An execution of {n.workflow_name} waits for approval."
    facts: list[tuple[str, str]] = [
        ("Workflow", f"{n.workflow_name} ({n.workflow})"),
        ("Rows", str(n.row_count)),
        ("Failing compliance", str(n.failing)),
        ("Deadline", deadline),
        ("Execution", str(n.execution)),
    ]
    text = "\n".join(
        [lead, "", *(f"{name}: {value}" for name, value in facts), "", f"Review: {link}", ""]
    )
    items = "".join(
        f"<tr><th align='left'>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in facts
    )
    body = (
        f"<p>{html.escape(lead)}</p><table>{items}</table>"
        f'<p><a href="{html.escape(link)}">Open the review screen</a></p>'
    )
    return Message(subject=subject, text=text, html=f"<html><body>{body}</body></html>")


def slack_text(n: ToSend, public_url: str) -> str:
    message = compose(n, public_url)
    return f"{message.subject}\n{message.text}"


async def record_attempt(n: ToSend, error: str | None, duration_ms: int, *, final: bool) -> None:
    """Log one attempt and count it; sent, or given up as failed when `final`."""
    status = "sent" if error is None else "failed" if final else "pending"
    async with pool.engine().transaction():
        await NotificationAttempt.insert(
            NotificationAttempt(
                notification=n.id,
                attempt_number=n.total_attempts + 1,
                error=error,
                duration_ms=duration_ms,
            )
        )
        await Notification.raw(
            "UPDATE notification SET attempts = attempts + 1, status = {}, "
            "  finished_at = CASE WHEN {} = 'pending' THEN NULL ELSE now() END WHERE id = {}",
            status,
            status,
            n.id,
        )


async def stalled(stalled_after: float) -> list[UUID]:
    """Pending notifications not attempted for `stalled_after` seconds (the reconciler queues
    them again under their own job id: a no-op while that job waits for its retry)."""
    rows = await Notification.raw(
        "SELECT n.id FROM notification n WHERE n.status = 'pending' AND COALESCE("
        "  (SELECT MAX(a.created_at) FROM notification_attempt a WHERE a.notification = n.id), "
        "  n.created_at) < now() - make_interval(secs => {}) LIMIT 1000",
        stalled_after,
    )
    return [row["id"] for row in rows]


class AttemptView(ReadModel, frozen=True):
    notification: UUID
    attempt_number: int
    error: str | None
    duration_ms: int
    created_at: datetime


class NotificationView(ReadModel, frozen=True):
    """One notification of an execution and its attempts (the execution page's log)."""

    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ()

    id: UUID
    kind: str
    channel: str
    recipient: str
    status: str
    attempts: int
    created_at: datetime
    finished_at: datetime | None
    attempts_log: list[AttemptView]


async def list_for_execution(execution_id: UUID) -> list[NotificationView]:
    notes = (
        await Notification.select(
            Notification.id,
            Notification.kind,
            Notification.channel,
            Notification.recipient,
            Notification.status,
            Notification.attempts,
            Notification.created_at,
            Notification.finished_at,
        )
        .where(Notification.execution == execution_id)
        .order_by(Notification.created_at)
    )
    if not notes:
        return []
    attempts = (
        await NotificationAttempt.select(
            NotificationAttempt.notification,
            NotificationAttempt.attempt_number,
            NotificationAttempt.error,
            NotificationAttempt.duration_ms,
            NotificationAttempt.created_at,
        )
        .where(NotificationAttempt.notification.is_in([n["id"] for n in notes]))
        .order_by(NotificationAttempt.attempt_number)
    )
    return [
        from_row(
            {**n, "attempts_log": [a for a in attempts if a["notification"] == n["id"]]},
            NotificationView,
        )
        for n in notes
    ]
