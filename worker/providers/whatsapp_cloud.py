"""The `whatsapp_cloud` messaging provider: the WhatsApp Business Cloud API.

`POST {base_url}/{phone_number_id}/messages` with `Authorization: Bearer <token>` (read from the
environment variable named by `access_token_env`) and

    {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "<digits>",
     "type": "text", "text": {"body": "<message>"}}

or, with `settings.template` ({name, language, body_parameters}), a template message whose body
parameters are row fields (`message` is the generated text). The answer's `messages[0].id`
(`wamid.…`) becomes the row's messageId. An error answer (`{"error": {"message", "type", "code",
"error_data": {"details"}}}`: invalid number, expired token, rate limit) fails that row with the
API's message.

A send is repeated only when the API certainly did not take it
(https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes): the connection
was refused, a rate limit (HTTP 429, or codes 4, 80007, 130429, 131056), or code 2 "API
Service" (503: temporary downtime or overload). Any other 5xx, or no answer after the request
went out, may have been accepted: the row's delivery is unknown and it is never resent. Codes
that no row can get past (an invalid token, a wrong path or version, a locked account) stop the
step.

Every worker sending from one `phone_number_id` shares its throughput, `messagesPerSecond`
(default 80, the Cloud API's default): a message is marked `sending` only once it has its turn
(wait_turn), and a 429 slows every worker (worker.providers.throttle).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import httpx

from web.domain.provider_limits import KEY_PREFIX
from web.domain.statuses import SendStatus
from worker.concurrency import map_bounded
from worker.providers.calls import CallPolicy, error_text, post_json
from worker.providers.secrets import read_secret, scrub
from worker.providers.throttle import Throttle, bucket
from worker.providers.types import (
    OutgoingMessage,
    ProviderConfigError,
    ProviderContext,
    ProviderError,
    ProviderLimits,
    SendResult,
)
from worker.providers.urls import http_url

DEFAULT_BASE_URL = "https://graph.facebook.com/v21.0"
DEFAULT_MESSAGES_PER_SECOND = 80.0  # the Cloud API's default throughput per phone number
WHO = "the WhatsApp Cloud API"

# Throttling: the request was refused, not processed.
RATE_LIMIT_CODES = frozenset({4, 80007, 130429, 131056})
# 503 "API Service": temporary downtime or overload, the request was not processed.
NOT_PROCESSED_CODE = 2
# No row can get past these: 0/190 the access token, 10 and 200-299 permissions, 2500 an
# unknown path (a wrong version or phone number id path), 131031 a locked account.
UNUSABLE_CODES = frozenset({0, 10, 190, 2500, 131031, *range(200, 300)})


class WhatsAppCloudMessenger:
    resend_safe = False
    saves_results = False

    def __init__(
        self,
        settings: dict[str, Any],
        http: httpx.AsyncClient,
        limits: ProviderLimits | None = None,
    ) -> None:
        self._http = http
        base_url = http_url(settings.get("base_url") or DEFAULT_BASE_URL, "base_url")
        phone_number_id = str(settings.get("phone_number_id") or "").strip()
        if not phone_number_id:
            raise ProviderConfigError("settings.phone_number_id is required")
        self._url = f"{base_url}/{phone_number_id}/messages"
        self._template: dict[str, Any] | None = settings.get("template")
        self._token = read_secret(settings, "access_token_env")
        self._policy = CallPolicy.from_settings(settings)
        self.concurrency = self._policy.concurrency
        # Whether the API has answered anything in this step (see _unreachable).
        self._answered = False
        per_second = float(settings.get("messagesPerSecond") or DEFAULT_MESSAGES_PER_SECOND)
        self._throttle = (
            None
            if limits is None
            else Throttle(
                limits,
                bucket(f"{KEY_PREFIX}whatsapp:{phone_number_id}:messages", per_second),
            )
        )

    @classmethod
    def for_step(cls, settings: dict[str, Any], context: ProviderContext) -> WhatsAppCloudMessenger:
        return cls(settings, context.http, context.limits)

    async def wait_turn(self, deadline: float) -> bool:
        return self._throttle is None or await self._throttle.turn(deadline=deadline)

    def request_body(self, message: OutgoingMessage) -> dict[str, Any]:
        """The Cloud API's message object for one row; ProviderError if it cannot be built."""
        to = re.sub(r"\D", "", message.recipient)
        if not to:
            raise ProviderError("the row has no phone number to send to")
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
        }
        if self._template is None:
            return {**body, "type": "text", "text": {"body": message.body}}
        template: dict[str, Any] = {
            "name": self._template["name"],
            "language": {"code": self._template["language"]},
        }
        names = self._template.get("body_parameters") or []
        if names:
            template["components"] = [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": self._parameter(message, name)} for name in names
                    ],
                }
            ]
        return {**body, "type": "template", "template": template}

    @staticmethod
    def _parameter(message: OutgoingMessage, name: str) -> str:
        value = message.body if name == "message" else message.data.get(name)
        if value is None or str(value) == "":
            raise ProviderError(f"template parameter {name!r} is missing in the row")
        return str(value)

    async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return await map_bounded(messages, self.concurrency, self._send_one)

    async def _send_one(self, message: OutgoingMessage) -> SendResult:
        try:
            response = await post_json(
                self._http,
                self._url,
                self.request_body(message),
                {"Authorization": f"Bearer {self._token}"},
                self._policy,
                resend_unsure=False,
                who=WHO,
                retryable=not_processed,
                limit=self._throttle,
            )
        except ProviderError as exc:
            return SendResult.from_error(message.row_id, exc, answered=self._answered)
        self._answered = True
        if response.status_code >= 500 and not not_processed(response):
            text = scrub(_error(response), self._token)
            return SendResult.unknown(
                message.row_id, f"{WHO} answered {response.status_code} ({text})"
            )
        if response.status_code >= 300:
            unusable = response.status_code in (401, 403, 404) or _code(response) in UNUSABLE_CODES
            return SendResult.failed(
                message.row_id, scrub(_error(response), self._token), stop=unusable
            )
        try:
            message_id = response.json()["messages"][0]["id"]
        except (ValueError, KeyError, IndexError, TypeError):
            message_id = None
        if not isinstance(message_id, str) or not message_id:
            return SendResult.unknown(
                message.row_id, f"{WHO} answer has no message id: {error_text(response)}"
            )
        return SendResult(message.row_id, SendStatus.SENT, message_id)


def not_processed(response: httpx.Response) -> bool:
    """An answer the Cloud API documents as "not processed": safe to send again."""
    if response.status_code == 429:
        return True
    code = _code(response)
    if code in RATE_LIMIT_CODES:
        return True
    return response.status_code == 503 and code == NOT_PROCESSED_CODE


def _code(response: httpx.Response) -> object:
    try:
        error = response.json()["error"]
        return error.get("code")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _error(response: httpx.Response) -> str:
    """`WhatsApp Cloud API error 131026: (#131026) Message undeliverable (details)`."""
    try:
        error = response.json()["error"]
        text = str(error["message"])
    except (ValueError, KeyError, TypeError):
        return f"WhatsApp Cloud API answered {response.status_code}: {error_text(response)}"
    code = error.get("code")
    details = (error.get("error_data") or {}).get("details")
    prefix = f"WhatsApp Cloud API error {code}" if code is not None else "WhatsApp Cloud API error"
    if details and details != text:
        text = f"{text} ({details})"
    return f"{prefix}: {text}"
