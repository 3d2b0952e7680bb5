"""`Vary: HX-Request` on every dashboard answer: a dashboard URL answers a full page or, to an
HTMX request, a partial, and caches (the browser's history cache too: the executions list
pushes its filtered URL, hx-push-url) must keep the two apart."""

from __future__ import annotations

from typing import Any

from litestar import Response

VARY_ON = "HX-Request"


def vary_on_htmx(response: Response[Any]) -> Response[Any]:
    """Add HX-Request to the answer's Vary header, keeping what is already there."""
    present = [part.strip() for part in response.headers.get("Vary", "").split(",") if part.strip()]
    if VARY_ON.lower() not in {part.lower() for part in present}:
        response.headers["Vary"] = ", ".join([*present, VARY_ON])
    return response


async def after_request(response: Response[Any]) -> Response[Any]:
    """The dashboard router's after_request hook (error pages add it themselves)."""
    return vary_on_htmx(response)
