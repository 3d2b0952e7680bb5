"""Dashboard sign-in: the login and logout pages, the guards every page uses, and `page()`,
which renders a template with what every page needs. Sessions live in Redis (Litestar's
server-side sessions); only the user's id is kept in them."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from arq.connections import ArqRedis
from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from web.domain import users
from web.domain.errors import TooManyRequests, Unauthorized
from web.domain.users import SignedInUser

Connection = ASGIConnection[Any, Any, Any, Any]
LOGIN_PATH = "/dashboard/login"


class LoginRequired(NotAuthorizedException):
    """No signed-in user: pages redirect to the login (web.dashboard.errors)."""


def is_htmx(request: Connection) -> bool:
    return request.headers.get("hx-request") == "true"


async def require_user(connection: Connection, _: BaseRouteHandler) -> None:
    session = (connection.session or {}) if "session" in connection.scope else {}
    user_id = session.get("user_id")
    user = await users.get_active_user(UUID(user_id)) if user_id else None
    if user is None or not await users.session_is_current(
        connection.app.state.arq, user.id, float(session.get("signed_in_at", 0))
    ):
        raise LoginRequired("Please sign in")
    connection.state.user = user


async def require_admin(connection: Connection, _: BaseRouteHandler) -> None:
    user: SignedInUser = connection.state.user
    if not user.is_admin:
        raise PermissionDeniedException("This page is for admins only")


def current_user(request: Request[Any, Any, Any]) -> SignedInUser:
    user: SignedInUser = request.state.user
    return user


def page(
    request: Request[Any, Any, Any], template: str, status_code: int = 200, **context: Any
) -> Template:
    """A dashboard template with the signed-in user (if any) in its context."""
    context.setdefault("user", getattr(request.state, "user", None))
    return Template(template_name=template, context=context, status_code=status_code)


def back_to(request: Request[Any, Any, Any], url: str) -> Response[Any]:
    """After a plain form post: see other. After an HTMX post, the handler renders instead."""
    return Redirect(url, status_code=HTTP_303_SEE_OTHER)


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/dashboard") and not target.startswith("//"):
        return target
    return "/dashboard"


class AuthController(Controller):
    path = "/dashboard"
    include_in_schema = False

    @get("/login")
    async def login_form(
        self, request: Request[Any, Any, Any], next: FromQuery[str | None] = None
    ) -> Template:
        return page(request, "auth/login.html", next=_safe_next(next), email="", error=None)

    @post("/login")
    async def login(
        self, request: Request[Any, Any, Any], arq: NamedDependency[ArqRedis]
    ) -> Response[Any]:
        form = await request.form()
        email = str(form.get("email", ""))
        target = _safe_next(str(form.get("next", "")))
        try:
            user = await users.sign_in(arq, email, str(form.get("password", "")))
        except (Unauthorized, TooManyRequests) as exc:
            status = 429 if isinstance(exc, TooManyRequests) else 400
            return page(
                request, "auth/login.html", status, next=target, email=email, error=exc.message
            )
        request.clear_session()  # a fresh session id after sign-in (no fixation)
        request.set_session({"user_id": str(user.id), "signed_in_at": time.time()})
        return Redirect(target, status_code=HTTP_303_SEE_OTHER)

    @post("/logout")
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        request.clear_session()
        return Redirect(LOGIN_PATH, status_code=HTTP_303_SEE_OTHER)
