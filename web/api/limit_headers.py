"""Rate-limit and quota headers on every public response, successes and errors alike.

An ASGI middleware on the public router: it reads what the auth guard and the execute handler
left in the request state and adds the headers as the response starts, so no handler and no
error path can forget them. Header names: public-api.md "Rate Limit Headers", plus the IETF
draft fields (draft-ietf-httpapi-ratelimit-headers) and X-Quota-* on execute.
"""

from __future__ import annotations

import math
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from web.domain.limits import BucketState, QuotaState

MONTH_WINDOW_SECONDS = 2_592_000  # 30 days, the IETF policy window of the monthly quota


def header_values(bucket: BucketState | None, quota: QuotaState | None) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    policies: list[str] = []
    if bucket is not None:
        window = math.ceil(bucket.capacity / bucket.refill_per_second)
        headers += [
            ("X-RateLimit-Limit", str(bucket.capacity)),
            ("X-RateLimit-Remaining", str(bucket.remaining)),
            ("X-RateLimit-Reset", str(bucket.reset_ms)),
            ("RateLimit", f'"burst";r={bucket.remaining};t={bucket.seconds_to_full}'),
        ]
        policies.append(f'"burst";q={bucket.capacity};w={window}')
    if quota is not None:
        headers += [
            ("X-Quota-Limit", str(quota.limit)),
            ("X-Quota-Remaining", str(quota.remaining)),
            ("X-Quota-Reset", str(int(quota.resets_at.timestamp() * 1000))),
        ]
        policies.append(f'"monthly";q={quota.limit};w={MONTH_WINDOW_SECONDS}')
    if policies:
        headers.append(("RateLimit-Policy", ", ".join(policies)))
    return headers


def limit_headers_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                state: dict[str, Any] = scope.get("state", {})
                values = header_values(state.get("rate_limit"), state.get("quota"))
                if values:
                    # Appended as raw pairs: no response sets these names itself, and this runs
                    # on every public response.
                    raw = list(message.get("headers", []))
                    raw.extend((name.lower().encode(), value.encode()) for name, value in values)
                    message["headers"] = raw
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware
