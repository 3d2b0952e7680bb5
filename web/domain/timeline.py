"""An execution's timeline for its dashboard page: started, each step, each decision and the
approval (from the audit trail), sends, webhook deliveries, reviewer notifications and the
end, oldest first. Built from the tables that hold each of them; nothing is stored for it.
Imports only web.domain.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from web.domain import audit, pool
from web.domain.executions import ExecutionDetail

# An execution's audit entries shown at most (one per row decision, at most a few hundred).
ENTRY_LIMIT = 1000


class TimelineEvent(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    kind: str  # started, step, decision, approval, send, webhook, notification, finished
    title: str
    detail: str | None = None
    actor: str | None = None


def _steps(execution: ExecutionDetail) -> list[TimelineEvent]:
    events = []
    steps = execution.definition.get("steps", [])
    for result in execution.step_results:
        finished = result.get("finishedAt")
        if not isinstance(finished, str):
            continue
        index = result.get("index", 0)
        step = steps[index] if isinstance(index, int) and index < len(steps) else {}
        name = step.get("name") or step.get("type") or result.get("type") or f"step {index}"
        events.append(
            TimelineEvent(
                at=datetime.fromisoformat(finished),
                kind="step",
                title=f"Step {name}: {result.get('outcome', 'done')}",
            )
        )
    return events


def _detail(entry: audit.AuditEntryView, *, purged: bool) -> str | None:
    """Which rows, and the comment: not once the retention policy removed the execution's
    personal data (a comment may name the customer; the audit trail keeps it for its own,
    longer retention, for those who may read the trail)."""
    after = entry.after if isinstance(entry.after, dict) else {}
    parts = []
    if entry.target_type == "execution_row" and "index" in after:
        parts.append(f"row {int(after['index']) + 1}")
    if after.get("bulk"):
        parts.append(f"all {after.get('rows')} rows")
    if after.get("approvalsWithdrawn"):  # approvals given before this change (maker-checker)
        parts.append(f"approvals withdrawn: {', '.join(map(str, after['approvalsWithdrawn']))}")
    if entry.comment and not purged:
        parts.append(f"“{entry.comment}”")
    return " · ".join(parts) or None


async def _decisions(execution_id: UUID, *, purged: bool) -> list[TimelineEvent]:
    entries = await audit.list_entries(
        audit.AuditFilters(execution_id=execution_id), limit=ENTRY_LIMIT, newest_first=False
    )
    return [
        TimelineEvent(
            at=entry.at,
            kind="approval" if entry.action.startswith("execution.") else "decision",
            title=entry.action,
            detail=_detail(entry, purged=purged),
            actor=entry.actor,
        )
        for entry in entries
    ]


async def _sends(execution_id: UUID) -> list[TimelineEvent]:
    async with pool.connection() as connection:
        rows = await connection.fetch(
            "SELECT send_status, count(*) AS rows, min(sent_at) AS first, max(sent_at) AS last "
            "FROM execution_row WHERE execution = $1 AND sent_at IS NOT NULL "
            "GROUP BY send_status ORDER BY min(sent_at)",
            execution_id,
        )
    return [
        TimelineEvent(
            at=row["first"],
            kind="send",
            title=f"{row['rows']} row{'s' if row['rows'] != 1 else ''} {row['send_status']}",
            detail=None if row["first"] == row["last"] else f"until {row['last']:%H:%M:%S} UTC",
        )
        for row in rows
    ]


async def _webhooks(execution_id: UUID) -> list[TimelineEvent]:
    async with pool.connection() as connection:
        rows = await connection.fetch(
            "SELECT e.event, a.attempt_number, a.status_code, a.error, a.created_at "
            "FROM webhook_attempt a JOIN webhook_event e ON e.id = a.event "
            "WHERE e.execution = $1 ORDER BY a.created_at",
            execution_id,
        )
    return [
        TimelineEvent(
            at=row["created_at"],
            kind="webhook",
            title=f"Webhook {row['event']} (attempt {row['attempt_number']})",
            detail=f"HTTP {row['status_code']}" if row["status_code"] else row["error"],
        )
        for row in rows
    ]


async def _notifications(execution_id: UUID) -> list[TimelineEvent]:
    """Reviewer notifications (web.domain.notifications): one event per attempt, by kind and
    channel (never the recipient: an email address or a Slack URL)."""
    async with pool.connection() as connection:
        rows = await connection.fetch(
            "SELECT n.kind, n.channel, a.attempt_number, a.error, a.created_at "
            "FROM notification_attempt a JOIN notification n ON n.id = a.notification "
            "WHERE n.execution = $1 ORDER BY a.created_at",
            execution_id,
        )
    return [
        TimelineEvent(
            at=row["created_at"],
            kind="notification",
            title=(
                f"Notification {row['kind']} by {row['channel']} (attempt {row['attempt_number']})"
            ),
            detail=row["error"] or "sent",
        )
        for row in rows
    ]


async def execution_timeline(execution: ExecutionDetail) -> list[TimelineEvent]:
    """Oldest first; events at the same moment keep the order above (start before steps)."""
    events: list[TimelineEvent] = [
        TimelineEvent(at=execution.created_at, kind="started", title="Started", actor=None)
    ]
    events += _steps(execution)
    purged = execution.personal_data_purged_at is not None
    events += await _decisions(execution.id, purged=purged)
    events += await _sends(execution.id)
    events += await _webhooks(execution.id)
    events += await _notifications(execution.id)
    if execution.completed_at is not None:
        events.append(
            TimelineEvent(
                at=execution.completed_at, kind="finished", title=f"Finished: {execution.status}"
            )
        )
    return sorted(events, key=lambda event: event.at)
