"""Executions pages: the filterable list, the live status badge, and the detail page."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from arq.connections import ArqRedis
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from web.dashboard.auth import (
    actor_of,
    approver_of,
    back_to,
    is_htmx,
    page,
    require_admin,
    require_user,
)
from web.domain import (
    api_keys,
    delivery_statuses,
    executions,
    list_pages,
    notifications,
    timeline,
    webhooks,
    workflows,
)
from web.domain.errors import InvalidInput
from web.domain.statuses import ExecutionStatus

PER_PAGE = 50
LIVE = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING)


def _date(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(f"{field} must be a date like 2025-10-23") from None


def _day_after(day: datetime | None) -> datetime | None:
    """The end of an inclusive "To" day; none after the last day a datetime can hold."""
    if day is None or day.date() == date.max:
        return None
    return day + timedelta(days=1)


def _uuid(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        raise InvalidInput("Unknown API key") from None


class ExecutionsController(Controller):
    path = "/dashboard/executions"
    guards = [require_user]
    include_in_schema = False

    @get("/")
    async def list_page(
        self,
        request: Request[Any, Any, Any],
        status: FromQuery[str | None] = None,
        workflow: FromQuery[str | None] = None,
        api_key: FromQuery[str | None] = None,
        created_from: FromQuery[str | None] = None,
        created_to: FromQuery[str | None] = None,
        older: FromQuery[str | None] = None,
        newer: FromQuery[str | None] = None,
    ) -> Template:
        filters = executions.ExecutionFilters(
            status=status or None,
            workflow=workflow or None,
            api_key=_uuid(api_key),
            created_from=_date(created_from, "From"),
            created_before=_day_after(_date(created_to, "To")),
        )
        listed = await executions.list_executions(
            filters,
            PER_PAGE,
            older=list_pages.decode_position(older, "older"),
            newer=list_pages.decode_position(newer, "newer"),
            viewer=approver_of(request),
        )
        context: dict[str, Any] = {
            "rows": listed.entries,
            "live": LIVE,
            "total": listed.total,
            "older": listed.older.encode() if listed.older else None,
            "newer": listed.newer.encode() if listed.newer else None,
            "filters": {
                "status": status or "",
                "workflow": workflow or "",
                "api_key": api_key or "",
                "created_from": created_from or "",
                "created_to": created_to or "",
            },
            "statuses": [s.value for s in ExecutionStatus],
            "workflows": [w.id for w in await workflows.list_workflow_choices()],
            "keys": await api_keys.list_keys(),
        }
        template = (
            "executions/_table.html"
            if is_htmx(request) and request.headers.get("hx-target") == "executions-table"
            else "executions/list.html"
        )
        return page(request, template, **context)

    @get("/{execution_id:uuid}/status")
    async def status_badge(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[UUID],
        shown: FromQuery[str | None] = None,
    ) -> Response[Any]:
        """The live status: polled every 2 s while the run is live (the partial stops asking
        once it is not). On the detail page (`shown` = the status it was rendered with), a
        change reloads the page so rows and results appear; on the list, the row's approval
        cell is updated with it (an out-of-band swap)."""
        detail = await executions.get_detail(execution_id, viewer=approver_of(request))
        response = page(
            request,
            "executions/_status.html",
            execution=detail,
            live=LIVE,
            with_approval=shown is None,
        )
        if shown and shown != detail.status:
            response.headers["HX-Refresh"] = "true"
        return response

    @get("/{execution_id:uuid}")
    async def detail_page(
        self, request: Request[Any, Any, Any], execution_id: FromPath[UUID]
    ) -> Template:
        detail = await executions.get_detail(execution_id, viewer=approver_of(request))
        steps = detail.definition.get("steps", [])
        results = {r["index"]: r for r in detail.step_results}
        return page(
            request,
            "executions/detail.html",
            execution=detail,
            live=LIVE,
            steps=[{**step, "result": results.get(i)} for i, step in enumerate(steps)],
            rows=await executions.list_rows(execution_id),
            deliveries=await webhooks.list_deliveries(execution_id),
            notifications=await notifications.list_for_execution(execution_id),
            delivery=(
                await delivery_statuses.counts(execution_id)
                if delivery_statuses.tracked(detail.definition)
                else None
            ),
            timeline=await timeline.execution_timeline(detail),
        )

    @post("/{execution_id:uuid}/webhooks/{event_id:uuid}/redeliver", guards=[require_admin])
    async def redeliver(
        self,
        request: Request[Any, Any, Any],
        execution_id: FromPath[UUID],
        event_id: FromPath[UUID],
        arq: NamedDependency[ArqRedis],
    ) -> Response[Any]:
        await webhooks.redeliver_event(arq, event_id, actor=actor_of(request))
        if is_htmx(request):
            return page(
                request,
                "executions/_deliveries.html",
                execution={"id": execution_id},
                deliveries=await webhooks.list_deliveries(execution_id),
                notice="Queued for redelivery",
            )
        return back_to(request, f"/dashboard/executions/{execution_id}#webhooks")
