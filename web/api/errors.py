"""Exception handlers that turn every failure into public-api.md's error shape:
{"message", "error", "statusCode"} (plus "retryAfter" on 429), whatever raised it."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from web.domain.errors import (
    UNSTORABLE_TEXT,
    UNSTORABLE_TEXT_ERRORS,
    DomainError,
    TooManyRequests,
    is_unavailable,
)
from web.domain.idempotency import REPLAYED_HEADER, Replayed

logger = logging.getLogger("flowgate.api")


# Reason phrases that Python renamed after RFC 9110, kept as customers' code knows them.
_PHRASES = {422: "Unprocessable Entity", 413: "Request Entity Too Large"}


def error_body(status_code: int, message: str) -> dict[str, Any]:
    phrase = _PHRASES.get(status_code) or HTTPStatus(status_code).phrase
    return {"message": message, "error": phrase, "statusCode": status_code}


def handle_replayed(_: Request[Any, Any, Any], replayed: Replayed) -> Response[bytes]:
    """The stored answer to an earlier request with the same Idempotency-Key, byte for byte."""
    return Response(
        content=replayed.answer.body,
        status_code=replayed.answer.status_code,
        media_type=MediaType.JSON,
        headers={REPLAYED_HEADER: "true"},
    )


def error_response(
    status_code: int, message: str, headers: dict[str, str] | None = None
) -> Response[dict[str, Any]]:
    return Response(
        content=error_body(status_code, message),
        status_code=status_code,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _validation_message(exc: ValidationException) -> str:
    """`input.csvData[3]: Expected `object`, got `str`` from Litestar's validation details."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if isinstance(item, dict) and item.get("message"):
            key = str(item.get("key") or "").removeprefix("$.").removeprefix("$")
            message = str(item["message"])
            if key == "data":
                # The body as a whole: Litestar names it after the handler's `data` argument.
                return "Request body is required" if message == "'data'" else f"body: {message}"
            return f"{key}: {message}" if key else message
    return "Invalid request body"


NOT_UTF8 = "Request body is not valid JSON: it is not UTF-8"


def _client_message(exc: HTTPException) -> str:
    detail = exc.detail or HTTPStatus(exc.status_code).phrase
    if exc.status_code == 400:
        # msgspec's decode errors, reworded for customers. Invalid UTF-8 raised
        # UnicodeDecodeError before msgspec 0.23 (handle_unexpected) and a DecodeError since.
        if "invalid utf-8" in detail.lower():
            return NOT_UTF8
        if detail == "Input data was truncated":
            return "Request body is not valid JSON: it ends too early"
        if detail.startswith("JSON is malformed: "):
            return "Request body is not valid JSON: " + detail.removeprefix("JSON is malformed: ")
    return detail


def handle_domain_error(_: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    if isinstance(exc, TooManyRequests):
        # public-api.md "429 Too Many Requests": the body adds retryAfter, the header Retry-After.
        return Response(
            content={
                "statusCode": 429,
                "message": exc.message,
                "error": "Too Many Requests",
                "retryAfter": exc.retry_after,
            },
            status_code=429,
            media_type=MediaType.JSON,
            headers={"Retry-After": str(exc.retry_after)},
        )
    return error_response(exc.status_code, exc.message)


def handle_http_exception(
    request: Request[Any, Any, Any], exc: HTTPException
) -> Response[dict[str, Any]]:
    if isinstance(exc, ValidationException):
        message = _validation_message(exc)
    elif exc.status_code == 413:
        message = "Request body is too large"
    elif exc.status_code >= 500:
        logger.error("server error on %s %s: %s", request.method, request.url.path, exc.detail)
        message = HTTPStatus(exc.status_code).phrase
    else:
        message = _client_message(exc)
    return error_response(exc.status_code, message, headers=exc.headers)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    # The JSON decoder raises these past Litestar's own handling of bad bodies.
    if isinstance(exc, RecursionError):
        return error_response(400, "Request body is nested too deeply")
    if isinstance(exc, UnicodeDecodeError):
        return error_response(400, NOT_UTF8)
    if isinstance(exc, UNSTORABLE_TEXT_ERRORS):
        return error_response(400, UNSTORABLE_TEXT)
    if is_unavailable(exc):
        logger.warning("dependency unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(
            503, "Service temporarily unavailable, please retry", headers={"Retry-After": "1"}
        )
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "Internal server error")


EXCEPTION_HANDLERS: Any = {
    Replayed: handle_replayed,
    DomainError: handle_domain_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
