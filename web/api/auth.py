"""Bearer-key authentication of the public API, as Litestar guards.

Guards run before the request body is read, which gives public-api.md's order of checks:
key (401) -> key inactive/expired (403) -> workflow exists (404) -> workflow usable (403) ->
body (400) -> quota (403, in the handler's domain call).
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from web.domain import api_keys, workflows
from web.domain.api_keys import AuthenticatedKey
from web.domain.workflows import RunnableWorkflow


async def require_api_key(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    connection.state.api_key = await api_keys.authenticate(connection.headers.get("authorization"))


async def require_runnable_workflow(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    connection.state.workflow = await workflows.get_runnable_workflow(
        connection.path_params["workflow_id"], connection.state.api_key
    )


def provide_api_key(request: ASGIConnection[Any, Any, Any, Any]) -> AuthenticatedKey:
    key: AuthenticatedKey = request.state.api_key
    return key


def provide_workflow(request: ASGIConnection[Any, Any, Any, Any]) -> RunnableWorkflow:
    workflow: RunnableWorkflow = request.state.workflow
    return workflow
