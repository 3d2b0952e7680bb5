"""`/webhooks/whatsapp` (at the server root, beside /api/v1/public): the WhatsApp Cloud API's
webhooks. GET answers Meta's verification handshake; POST takes a signed notification, stores it
and answers 200 at once (web.domain.whatsapp_inbound processes it in a job). Handlers only."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, HttpMethod, Request, Response, get, post, route
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Parameter, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.status_codes import HTTP_204_NO_CONTENT

from web.api.schemas import ErrorBody
from web.domain import whatsapp_inbound
from web.settings import Settings


class ReceivedResponse(msgspec.Struct):
    status: str


def _errors(*codes: tuple[int, str]) -> dict[int, ResponseSpec]:
    return {
        code: ResponseSpec(data_container=ErrorBody, description=text, examples=[])
        for code, text in codes
    }


def _query(name: str, description: str) -> Parameter:
    return Parameter(
        name=name,
        param_in="query",
        required=False,
        schema=Schema(type=OpenAPIType.STRING),
        description=description,
    )


class WhatsAppWebhookController(Controller):
    path = "/webhooks/whatsapp"
    tags = ["WhatsApp webhooks"]

    # Litestar's own OPTIONS answer names only one of this path's two handlers (POST): say both.
    @route("/", http_method=[HttpMethod.OPTIONS], include_in_schema=False, sync_to_thread=False)
    def options(self) -> Response[None]:
        return Response(
            None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": "GET, OPTIONS, POST"}
        )

    @get(
        "/",
        summary="WhatsApp webhook verification",
        description=(
            "Meta's verification handshake: with `hub.mode=subscribe` and `hub.verify_token` "
            "equal to FLOWGATE_WHATSAPP_VERIFY_TOKEN, answers 200 with `hub.challenge` as the "
            "whole text/plain body; anything else is 403."
        ),
        media_type="text/plain",
        parameters=[
            _query("hub.mode", "`subscribe`"),
            _query("hub.verify_token", "the verify token set in the Meta app"),
            _query("hub.challenge", "echoed back"),
        ],
        responses=_errors((403, "Verification failed")),
        sync_to_thread=False,
    )
    def verify(self, request: Request[Any, Any, Any]) -> Response[str]:
        settings: Settings = request.app.state.settings
        query = request.query_params
        challenge = whatsapp_inbound.verify_handshake(
            query.get("hub.mode"),
            query.get("hub.verify_token"),
            query.get("hub.challenge"),
            settings.whatsapp_verify_token,
        )
        return Response(challenge, media_type="text/plain")

    @post(
        "/",
        summary="WhatsApp webhook notifications",
        description=(
            "A Cloud API notification (`entry[].changes[].value.statuses[]` and `.messages[]`), "
            "signed with `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body with "
            "the app secret>`. Stored and acknowledged with 200; processed within seconds. "
            "A bad or missing signature is 401 and stores nothing; without "
            "FLOWGATE_WHATSAPP_APP_SECRET the endpoint answers 503."
        ),
        status_code=200,
        responses=_errors(
            (401, "Invalid or missing X-Hub-Signature-256"),
            (413, "Request body over the size limit"),
            (503, "The app secret is not configured, or PostgreSQL is unreachable"),
        ),
    )
    async def receive(self, request: Request[Any, Any, Any]) -> ReceivedResponse:
        settings: Settings = request.app.state.settings
        body = await request.body()  # bounded: FLOWGATE_MAX_BODY_BYTES, else 413
        whatsapp_inbound.check_signature(
            body,
            request.headers.get(whatsapp_inbound.SIGNATURE_HEADER),
            settings.whatsapp_app_secret,
        )
        await whatsapp_inbound.receive(request.app.state.scripts, body)
        return ReceivedResponse(status="received")
