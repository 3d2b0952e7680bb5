"""Idempotency-Key on the public API's state-changing requests (the IETF draft "The
Idempotency-Key HTTP Header Field"): a request sent again with the same key gets the answer the
first one got, and nothing happens a second time.

A use case that does its work in a transaction (approve, reject) calls `begin` first and
`finish` last inside it, so the stored answer and the work it describes are committed together
or not at all; `start_execution`, whose work is one statement, does the same inside that
statement (executions.INSERT_EXECUTION_ONCE) and calls `replay_or_refuse` when it stored none.
`begin` takes a transaction-scoped advisory lock on the
(API key, idempotency key) pair without waiting: a twin still in flight holds it, and the
second request is told so at once (409) instead of queueing behind it. Only answers of work done
are stored; a request refused (validation, auth, limits, conflicts) rolls back and stores
nothing, so the client may fix it and retry with the same key. Imports only web.domain.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar
from uuid import UUID, uuid4

from web.domain import clock, pool
from web.domain.errors import Conflict, DomainError, InvalidInput
from web.domain.pool import Connection

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")
INVALID_KEY = (
    "Idempotency-Key must be 1 to 255 characters, each a visible ASCII character (0x21-0x7E)"
)
STILL_PROCESSING = "A request with this Idempotency-Key is still being processed"
USED_FOR_ANOTHER_REQUEST = "Idempotency-Key is already used for a different request"


class KeyReused(DomainError):
    """The idempotency key came with another method, path or body: 422."""

    status_code = 422


@dataclass(frozen=True)
class IdempotentCall:
    """One request that carried an Idempotency-Key: whose, which key, what it asked."""

    api_key_id: UUID
    key: str
    fingerprint: str
    ttl: timedelta

    @property
    def lock_id(self) -> int:
        """A signed 64-bit advisory-lock id for the (API key, idempotency key) pair."""
        digest = hashlib.blake2b(f"{self.api_key_id}\n{self.key}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)


@dataclass(frozen=True)
class Answer:
    """What the first request was answered: replayed byte for byte."""

    status_code: int
    body: bytes


Result = TypeVar("Result")


@dataclass(frozen=True)
class Once(Generic[Result]):
    """What a use case needs to be idempotent: the call, and how its result is answered (the
    caller's response body, so that the stored answer is exactly what the first request got)."""

    call: IdempotentCall
    answer: Callable[[Result], Answer]


class Replayed(Exception):
    """The request was answered before (same key, same request): here is that answer."""

    def __init__(self, answer: Answer) -> None:
        super().__init__("replayed")
        self.answer = answer


def parse_key(value: str | None) -> str | None:
    """The header's value as sent (never trimmed), None without one; InvalidInput otherwise."""
    if value is None:
        return None
    if not _VALID_KEY.fullmatch(value):
        raise InvalidInput(INVALID_KEY)
    return value


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests "the same request": method, path and the exact body bytes."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


async def begin(connection: Connection, once: Once[Any] | None) -> None:
    """In the use case's transaction, before its work: Conflict when a twin is in flight,
    KeyReused for another request under the same key, Replayed when it was answered before."""
    if once is None:
        return
    call = once.call
    if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", call.lock_id):
        raise Conflict(STILL_PROCESSING)
    await replay_or_refuse(connection, call)


async def replay_or_refuse(connection: Connection, call: IdempotentCall) -> None:
    """Replayed with the key's unexpired answer to the same request, KeyReused for another
    request; nothing when the key has no answer yet."""
    stored = await connection.fetchrow(
        "SELECT fingerprint, status_code, body FROM idempotent_request "
        "WHERE api_key = $1 AND key = $2 AND expires_at > now()",
        call.api_key_id,
        call.key,
    )
    if stored is None:
        return
    if stored["fingerprint"] != call.fingerprint:
        raise KeyReused(USED_FOR_ANOTHER_REQUEST)
    raise Replayed(Answer(status_code=stored["status_code"], body=stored["body"].encode()))


async def finish(connection: Connection, once: Once[Result] | None, result: Result) -> None:
    """In the same transaction, after the work: keep the answer to `result` until the key
    expires (an expired answer under the same key is replaced)."""
    if once is None:
        return
    call, answer = once.call, once.answer(result)
    await connection.execute(
        "INSERT INTO idempotent_request "
        "  (id, api_key, key, fingerprint, status_code, body, created_at, expires_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, now(), now() + $7::interval) "
        "ON CONFLICT (api_key, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
        "  status_code = EXCLUDED.status_code, body = EXCLUDED.body, "
        "  created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at",
        uuid4(),
        call.api_key_id,
        call.key,
        call.fingerprint,
        answer.status_code,
        answer.body.decode(),
        call.ttl,
    )


async def purge_expired(batch_size: int = 5_000) -> int:
    """Delete expired answers in batches (the worker's cron); how many were deleted."""
    removed = 0
    while True:
        async with pool.connection() as connection:
            done = await connection.fetchval(
                "WITH gone AS (DELETE FROM idempotent_request WHERE id IN ("
                "  SELECT id FROM idempotent_request WHERE expires_at <= $1 LIMIT $2"
                ") RETURNING 1) SELECT count(*) FROM gone",
                clock.now(),
                batch_size,
            )
        removed += int(done)
        if done < batch_size:
            return removed
