"""Errors the domain raises for callers to show: each carries the HTTP status it maps to and a
message written for the customer. web.api turns them into {message, error, statusCode}. Also
which errors of the libraries mean "PostgreSQL or Redis is unavailable" (is_unavailable)."""

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


class NotAcceptable(DomainError):
    status_code = 406


class Conflict(DomainError):
    status_code = 409


class TooManyRequests(DomainError):
    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# Errors that only the PostgreSQL and Redis clients raise, and only when the server cannot be
# reached or is going away: a 503 the client may retry, not a 500; a job tried again later.
_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,  # also what web.domain.script_client raises
    redis.exceptions.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # e.g. a connection that is already closed
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)

# The client libraries whose own socket errors mean "PostgreSQL or Redis is unreachable".
_CLIENT_PACKAGES = frozenset({"asyncpg", "redis"})


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says PostgreSQL or Redis cannot be reached now (try again later), rather
    than that the code that raised it failed.

    An OSError or TimeoutError counts only when a client library raised it while reaching its
    server: asyncpg lets the socket's own error through when it connects (connection refused,
    no route, its connect timeout) and its command timeout. The same classes raised anywhere else
    (a step's own socket or file, a provider's timeout) are that code's failure: a step fails
    with it, and is not tried again and again as if the database were down."""
    if isinstance(exc, _UNAVAILABLE_TYPES):
        return True
    return isinstance(exc, OSError | TimeoutError) and _raised_in_client(exc)


def _raised_in_client(exc: BaseException) -> bool:
    traceback = exc.__traceback__
    while traceback is not None:
        module = traceback.tb_frame.f_globals.get("__name__") or ""
        if module.partition(".")[0] in _CLIENT_PACKAGES:
            return True
        traceback = traceback.tb_next
    return False


# PostgreSQL refuses text holding U+0000. Inputs are checked where they enter, and anything that
# still slips through is a client error (400) rather than a 500: the transaction rolled back.
UNSTORABLE_TEXT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
)
UNSTORABLE_TEXT = "Text must not contain the NUL character (\\u0000)"
