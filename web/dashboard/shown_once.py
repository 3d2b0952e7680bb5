"""Secrets shown once (a new API key, an invited user's password) after post/redirect/get: the
POST keeps them in the server-side session (never a URL, a cookie or a log) for the page its
redirect leads to, which takes them out. Reloading that page, or opening it from history, finds
nothing and goes elsewhere: the secret is shown once and the POST is never repeated."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Request

SESSION_ENTRY = "shown_once"


def keep(request: Request[Any, Any, Any], target: UUID, **secrets: Any) -> None:
    """Keep `secrets` for one showing on the page of `target` (a key's or a user's id)."""
    request.session[SESSION_ENTRY] = {"target": str(target), **secrets}


def take(request: Request[Any, Any, Any], target: UUID) -> dict[str, Any] | None:
    """What `keep` left for `target`, forgotten as it is read; None once shown (or never kept).
    Anything kept for another target is forgotten too: only the page just redirected to shows it."""
    kept: dict[str, Any] | None = request.session.pop(SESSION_ENTRY, None)
    if not kept or kept.pop("target", None) != str(target):
        return None
    return kept
