"""Browser hardening on every dashboard answer (pages, partials, redirects, error pages, even a
404 for a path no route matches): a Content-Security-Policy that allows only our own files
(no inline script or style; static/app.js does what inline bits would), no framing, no MIME
sniffing, no referrer outside the site, and no caching (after sign-out, Back shows no data).

An app-level `before_send` hook, so it sees answers that never reach the dashboard router.
Answers outside /dashboard (the public API's contract, /health, /static, /schema) are left as
they are."""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HARDENING = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


async def harden_dashboard_answers(message: Message, scope: Scope) -> None:
    if message["type"] != "http.response.start" or not scope["path"].startswith("/dashboard"):
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in HARDENING.items():
        headers[name] = value
