"""How dashboard pages fail: a sign-in redirect, or an HTML page (or, for HTMX requests, a
message swapped into the page's flash area) instead of the public API's JSON errors."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template

from web.dashboard.auth import LOGIN_PATH, is_htmx
from web.dashboard.vary import vary_on_htmx
from web.domain.errors import UNSTORABLE_TEXT, UNSTORABLE_TEXT_ERRORS, DomainError, is_unavailable

logger = logging.getLogger("flowgate.dashboard")
UNAVAILABLE = "The service is temporarily unavailable. Please try again in a moment."


def redirect_to_login(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return vary_on_htmx(_redirect_to_login(request, exc))


def error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return vary_on_htmx(_error_page(request, exc))


def _redirect_to_login(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
    target = f"{LOGIN_PATH}?next={quote(request.url.path)}"
    if is_htmx(request):
        return Response(content="", status_code=200, headers={"HX-Redirect": target})
    return Redirect(target, status_code=303)


def _error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, DomainError):
        status, message = exc.status_code, exc.message
    elif isinstance(exc, HTTPException):
        status, message = exc.status_code, str(exc.detail)
        if status == 403 and "CSRF" in message:
            message = "Your form expired or came from elsewhere. Reload the page and try again."
    elif isinstance(exc, UNSTORABLE_TEXT_ERRORS):
        status, message = 400, UNSTORABLE_TEXT
    elif is_unavailable(exc):
        status, message = 503, UNAVAILABLE
    else:
        status, message = 500, "Something went wrong on our side."
    if status >= 500:
        _log_server_error(request, exc, status)
        if isinstance(exc, HTTPException):
            message = "Something went wrong on our side."  # its detail is not for the page
    if is_htmx(request):
        return Response(
            content=f'<div class="flash error" role="alert">{_escape(message)}</div>',
            status_code=status,
            media_type=MediaType.HTML,
            headers={"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"},
        )
    return Template(
        template_name="errors/error.html",
        context={
            "status": status,
            "title": HTTPStatus(status).phrase,
            "message": message,
            "user": getattr(request.state, "user", None),
        },
        status_code=status,
    )


def _log_server_error(request: Request[Any, Any, Any], exc: Exception, status: int) -> None:
    """Every 5xx, with its traceback. Only the method and the path are named: not the query,
    the form, the headers or the cookies, which may carry what must never be logged."""
    level = logging.WARNING if status == 503 else logging.ERROR
    logger.log(level, "%s on %s %s", status, request.method, request.url.path, exc_info=exc)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
