"""The audit trail's page: filters, keyset pages (newest first) and a CSV export of what the
filters select. Admins see every entry; a reviewer only their own decisions (the domain's
`own_decisions_of` filter, decided here from the signed-in user)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.params import FromQuery
from litestar.response import Stream, Template

from web.dashboard.auth import current_user, page, require_user
from web.domain import audit
from web.domain.errors import InvalidInput

PER_PAGE = 50
# A CSV cell a spreadsheet would run as a formula starts with one of these: prefixed with '.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = (
    "id", "at", "actorType", "actor", "action", "targetType", "targetId", "executionId",
    "before", "after", "comment", "ip", "userAgent", "prevHash", "hash",
)  # fmt: skip


def _time(value: str | None, field: str) -> datetime | None:
    """A day (2026-12-01) or an ISO 8601 time; UTC when it names no zone."""
    if not value or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{field} must be a date or an ISO 8601 time like 2026-12-01T09:30:00Z"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _execution(value: str | None) -> UUID | None:
    if not value or not value.strip():
        return None
    try:
        return UUID(value.strip())
    except ValueError:
        raise InvalidInput("Execution must be an execution id") from None


def safe_cell(value: Any) -> str:
    """One CSV cell: JSON stays JSON, None is empty, and a formula is defused with '."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else audit.json_text(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class AuditController(Controller):
    path = "/dashboard/audit"
    guards = [require_user]
    include_in_schema = False

    def _filters(
        self,
        request: Request[Any, Any, Any],
        since: str | None,
        until: str | None,
        actor: str | None,
        action: str | None,
        execution: str | None,
    ) -> audit.AuditFilters:
        user = current_user(request)
        for name, value in (("Actor", actor), ("Action", action)):
            if value and "\x00" in value:
                raise InvalidInput(f"{name} contains a NUL character")
        return audit.AuditFilters(
            since=_time(since, "Since"),
            until=_time(until, "Until"),
            actor=(actor or "").strip() or None,
            action=(action or "").strip() or None,
            execution_id=_execution(execution),
            own_decisions_of=None if user.is_admin else user.id,
        )

    @get("/")
    async def list_page(
        self,
        request: Request[Any, Any, Any],
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
        actor: FromQuery[str | None] = None,
        action: FromQuery[str | None] = None,
        execution: FromQuery[str | None] = None,
        before: FromQuery[int | None] = None,
    ) -> Template:
        filters = self._filters(request, since, until, actor, action, execution)
        if before is not None and not 0 < before <= audit.MAX_ID:
            raise InvalidInput("before must be an entry id")
        entries = await audit.list_entries(filters, limit=PER_PAGE + 1, cursor=before)
        query = {
            "since": since or "",
            "until": until or "",
            "actor": actor or "",
            "action": action or "",
            "execution": execution or "",
        }
        return page(
            request,
            "audit/list.html",
            entries=entries[:PER_PAGE],
            older=entries[PER_PAGE - 1].id if len(entries) > PER_PAGE else None,
            query=query,
            actions=audit.ACTIONS if current_user(request).is_admin else audit.DECISION_ACTIONS,
            own_only=not current_user(request).is_admin,
        )

    @get("/export.csv")
    async def export(
        self,
        request: Request[Any, Any, Any],
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
        actor: FromQuery[str | None] = None,
        action: FromQuery[str | None] = None,
        execution: FromQuery[str | None] = None,
    ) -> Stream:
        filters = self._filters(request, since, until, actor, action, execution)

        async def rows() -> AsyncIterator[str]:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(CSV_COLUMNS)
            async for entry in audit.iter_entries(filters):
                shown = entry.to_json()
                writer.writerow([safe_cell(shown[column]) for column in CSV_COLUMNS])
                if buffer.tell() > 64 * 1024:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
            yield buffer.getvalue()

        return Stream(
            rows(),
            media_type="text/csv",
            headers={
                "Content-Disposition": 'attachment; filename="audit.csv"',
                "Cache-Control": "no-store",
            },
        )
