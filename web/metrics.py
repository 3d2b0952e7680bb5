"""GET /metrics (Prometheus text format, only with `Authorization: Bearer
$FLOWGATE_METRICS_TOKEN`) and the ASGI wrapper that counts and times every HTTP request by its
route template. The metric objects live in web.domain.metrics."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import State

from web.api.errors import error_response
from web.domain import metrics
from web.settings import Settings


@get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    settings: Settings = state.settings
    refusal = metrics.scrape_refusal(request.headers.get("authorization"), settings.metrics_token)
    if refusal is not None:
        message, _ = metrics.SCRAPE_ERRORS[refusal]
        headers = {"WWW-Authenticate": "Bearer"} if refusal == 401 else None
        return error_response(refusal, message, headers)
    sampled = await metrics.sample_queues(state.arq)
    # The text format's media type; Litestar adds the charset itself.
    media_type = metrics.CONTENT_TYPE.removesuffix("; charset=utf-8")
    return Response(metrics.exposition(sampled), media_type=media_type, status_code=200)


def with_request_metrics(app: Any) -> Any:
    """Count and time each HTTP request by the route template Litestar matched
    (scope["path_template"], set while routing), method and status; `unmatched` when no
    route matched (a 404), never the raw path."""

    async def observed(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_and_note)
        finally:
            metrics.http_request(
                scope.get("path_template"),
                scope["method"],
                status,
                time.perf_counter() - started,
            )

    return observed
