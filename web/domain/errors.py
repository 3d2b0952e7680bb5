"""Errors the domain raises for callers to show: each carries the HTTP status it maps to and a
message written for the customer. web.api turns them into {message, error, statusCode}."""

from __future__ import annotations

import asyncpg
import redis.exceptions


class DomainError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError):
    status_code = 400


class Unauthorized(DomainError):
    status_code = 401


class Forbidden(DomainError):
    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class TooManyRequests(DomainError):
    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# Infrastructure that is down or unreachable: a 503 the client may retry, not a 500.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.InterfaceError,
    ConnectionError,
    TimeoutError,
    OSError,
)


# PostgreSQL refuses text holding U+0000. Inputs are checked where they enter, and anything that
# still slips through is a client error (400) rather than a 500: the transaction rolled back.
UNSTORABLE_TEXT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
)
UNSTORABLE_TEXT = "Text must not contain the NUL character (\\u0000)"
