"""The `http` messaging provider: a customer's own gateway.

`POST settings.url` with the JSON

    {"executionId": "<uuid>", "customerId": "<row customerId>", "to": "<recipient>",
     "message": "<text>", "row": {<the row's input fields>}}

an optional `Authorization: Bearer <token>` (read from the environment variable named by
`token_env`), the extra `headers` of the settings (not for secrets: they are stored with the
workflow) and `Idempotency-Key: <row id>`, so a gateway that keeps keys can drop a repeat. A 2xx
answer must be JSON with `messageId`; anything else fails the row.

The contract with the gateway on repeats: 429 and 503 mean "not processed, try again later"
(honouring Retry-After) and are retried, as is a refused connection; any other 5xx, or no answer
after the request went out, may have been sent: the row's delivery is unknown and it is never
resent. 401, 403 and 404 stop the step (no row can get past them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import httpx

from web.domain.statuses import SendStatus
from worker.concurrency import map_bounded
from worker.providers.calls import CallPolicy, error_text, post_json
from worker.providers.secrets import read_secret, scrub
from worker.providers.types import (
    OutgoingMessage,
    ProviderContext,
    ProviderError,
    SendResult,
)
from worker.providers.urls import http_url

WHO = "the gateway"


class HttpGatewayMessenger:
    resend_safe = False
    saves_results = False

    def __init__(
        self, settings: dict[str, Any], http: httpx.AsyncClient, execution_id: UUID
    ) -> None:
        self._http = http
        self._url = http_url(settings.get("url"), "url")
        self._execution_id = execution_id
        self._headers = {str(k): str(v) for k, v in (settings.get("headers") or {}).items()}
        self._token = read_secret(settings, "token_env") if settings.get("token_env") else ""
        if self._token:
            self._headers["Authorization"] = f"Bearer {self._token}"
        self._policy = CallPolicy.from_settings(settings)
        self.concurrency = self._policy.concurrency
        # Whether the gateway has answered anything in this step.
        self._answered = False

    @classmethod
    def for_step(cls, settings: dict[str, Any], context: ProviderContext) -> HttpGatewayMessenger:
        return cls(settings, context.http, context.execution_id)

    def request_body(self, message: OutgoingMessage) -> dict[str, Any]:
        return {
            "executionId": str(self._execution_id),
            "customerId": message.data.get("customerId"),
            "to": message.recipient,
            "message": message.body,
            "row": message.data,
        }

    async def wait_turn(self, deadline: float) -> bool:
        return True  # no shared limit

    async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return await map_bounded(messages, self.concurrency, self._send_one)

    async def _send_one(self, message: OutgoingMessage) -> SendResult:
        try:
            response = await post_json(
                self._http,
                self._url,
                self.request_body(message),
                {**self._headers, "Idempotency-Key": str(message.row_id)},
                self._policy,
                resend_unsure=False,
                who=WHO,
                retryable=not_processed,
            )
        except ProviderError as exc:
            return SendResult.from_error(message.row_id, exc, answered=self._answered)
        self._answered = True
        status = response.status_code
        text = scrub(error_text(response), self._token)
        if status >= 500 and not not_processed(response):
            return SendResult.unknown(message.row_id, f"{WHO} answered {status}: {text}")
        if status >= 300:
            return SendResult.failed(
                message.row_id, f"{WHO} answered {status}: {text}", stop=status in (401, 403, 404)
            )
        try:
            message_id = response.json()["messageId"]
        except (ValueError, KeyError, TypeError):
            message_id = None
        if (
            not isinstance(message_id, str | int)
            or isinstance(message_id, bool)
            or message_id == ""
        ):
            return SendResult.unknown(
                message.row_id, f"{WHO}'s answer has no messageId: {error_text(response)}"
            )
        return SendResult(message.row_id, SendStatus.SENT, str(message_id))


def not_processed(response: httpx.Response) -> bool:
    """429 and 503: the gateway did not process the request (the documented contract)."""
    return response.status_code in (429, 503)
