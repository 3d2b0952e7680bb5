"""The dashboard's routes, under /dashboard."""

from __future__ import annotations

from litestar import Router, get
from litestar.response import Redirect

from web.dashboard.approvals import ApprovalsController
from web.dashboard.audit import AuditController
from web.dashboard.auth import AuthController
from web.dashboard.executions import ExecutionsController
from web.dashboard.keys import KeysController
from web.dashboard.suppressions import SuppressionsController
from web.dashboard.users import UsersController
from web.dashboard.vary import after_request
from web.dashboard.workflows import WorkflowsController


@get("/dashboard", include_in_schema=False)
async def home() -> Redirect:
    return Redirect("/dashboard/executions", status_code=303)


def dashboard_router() -> Router:
    return Router(
        path="/",
        route_handlers=[
            home,
            AuthController,
            ExecutionsController,
            ApprovalsController,
            KeysController,
            WorkflowsController,
            UsersController,
            SuppressionsController,
            AuditController,
        ],
        include_in_schema=False,
        after_request=after_request,
    )
