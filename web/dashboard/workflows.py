"""Workflows pages (admins only): the list with execution counts, activate / deactivate (one row
swapped by HTMX), and a workflow's steps with their settings."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath
from litestar.plugins.flash import flash
from litestar.response import Template

from web.dashboard.auth import actor_of, back_to, is_htmx, page, require_admin, require_user
from web.domain import workflows

BASE = "/dashboard/workflows"


class WorkflowsController(Controller):
    path = BASE
    guards = [require_user, require_admin]
    include_in_schema = False

    @get("/")
    async def list_page(self, request: Request[Any, Any, Any]) -> Template:
        return page(
            request, "workflows/list.html", workflows=await workflows.list_workflows_with_counts()
        )

    @get("/{workflow_id:str}")
    async def detail_page(
        self, request: Request[Any, Any, Any], workflow_id: FromPath[str]
    ) -> Template:
        workflow = await workflows.get_workflow_with_counts(workflow_id)
        return page(request, "workflows/detail.html", workflow=workflow)

    async def _set_active(
        self, request: Request[Any, Any, Any], workflow_id: str, active: bool
    ) -> Response[Any]:
        if active:
            await workflows.activate_workflow(workflow_id, actor=actor_of(request))
        else:
            await workflows.deactivate_workflow(workflow_id, actor=actor_of(request))
        if is_htmx(request):
            workflow = await workflows.get_workflow_with_counts(workflow_id)
            return page(request, "workflows/_row.html", workflow=workflow)
        state = "active" if active else "inactive: executing it answers 403"
        flash(request, f"Workflow {workflow_id} is {state}", category="success")
        form = await request.form()
        on_detail = form.get("back") == "detail"
        return back_to(request, f"{BASE}/{workflow_id}" if on_detail else BASE)

    @post("/{workflow_id:str}/activate")
    async def activate(
        self, request: Request[Any, Any, Any], workflow_id: FromPath[str]
    ) -> Response[Any]:
        return await self._set_active(request, workflow_id, True)

    @post("/{workflow_id:str}/deactivate")
    async def deactivate(
        self, request: Request[Any, Any, Any], workflow_id: FromPath[str]
    ) -> Response[Any]:
        return await self._set_active(request, workflow_id, False)
