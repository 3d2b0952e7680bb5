"""Dashboard sign-in: the login and logout pages, the guards every page uses, and `page()`,
which renders a template with what every page needs. Sessions live in Redis
(web.dashboard.sessions): made only here, at sign-in, with a new id."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from web.dashboard import sessions
from web.domain import metrics, users
from web.domain.actors import Actor
from web.domain.approvers import Approver
from web.domain.errors import TooManyRequests, Unauthorized
from web.domain.users import SignedInUser
from web.settings import Settings

Connection = ASGIConnection[Any, Any, Any, Any]
LOGIN_PATH = "/dashboard/login"


class LoginRequired(NotAuthorizedException):
    """No signed-in user: pages redirect to the login (web.dashboard.errors)."""


def is_htmx(request: Connection) -> bool:
    return request.headers.get("hx-request") == "true"


def client_ip(connection: Connection) -> str:
    return connection.client.host if connection.client else "unknown"


async def require_user(connection: Connection, _: BaseRouteHandler) -> None:
    session = sessions.signed_in(connection)
    user = await users.get_active_user(session.user_id) if session else None
    if (
        session is None
        or user is None
        or not await users.session_is_current(
            connection.app.state.arq, user.id, session.signed_in_at
        )
    ):
        raise LoginRequired("Please sign in")
    if user.role != session.role:  # privileges changed: the session gets a new id
        await sessions.rotate(connection, user)
    connection.state.user = user


async def require_admin(connection: Connection, _: BaseRouteHandler) -> None:
    user: SignedInUser = connection.state.user
    if not user.is_admin:
        raise PermissionDeniedException("This page is for admins only")


def current_user(request: Request[Any, Any, Any]) -> SignedInUser:
    user: SignedInUser = request.state.user
    return user


def actor_of(request: Request[Any, Any, Any]) -> Actor:
    """The signed-in user as the audit trail names them, with their address and browser."""
    user = current_user(request)
    return Actor.user(
        user.id, user.email, ip=client_ip(request), user_agent=request.headers.get("user-agent")
    )


def approver_of(request: Request[Any, Any, Any]) -> Approver:
    """The signed-in user as an approver: who decides, and who looks (their groups decide
    which executions they see)."""
    return Approver.user(current_user(request), actor_of(request))


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
        self,
        request: Request[Any, Any, Any],
        arq: NamedDependency[ArqRedis],
        settings: NamedDependency[Settings],
    ) -> Response[Any]:
        form = await request.form()
        email = str(form.get("email", ""))
        target = _safe_next(str(form.get("next", "")))
        try:
            user = await users.sign_in(
                arq,
                email,
                str(form.get("password", "")),
                client_ip=client_ip(request),
                attempts_per_minute=settings.sign_in_attempts_per_minute,
                user_agent=request.headers.get("user-agent"),
            )
        except (Unauthorized, TooManyRequests) as exc:
            status = 429 if isinstance(exc, TooManyRequests) else 400
            response = page(
                request, "auth/login.html", status, next=target, email=email, error=exc.message
            )
            if isinstance(exc, TooManyRequests):
                metrics.refused("sign_in")
                response.headers["Retry-After"] = str(exc.retry_after)
            return response
        await sessions.start(request, user)  # a new id, never the one the browser sent
        return Redirect(target, status_code=HTTP_303_SEE_OTHER)

    @post("/logout")
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        await sessions.end(request)
        return Redirect(LOGIN_PATH, status_code=HTTP_303_SEE_OTHER)
