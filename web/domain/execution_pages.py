"""One API key's executions, newest first, a page at a time (`GET /executions`): filters,
keyset pagination and the opaque cursor. Imports only web.domain.

The cursor is the (created_at, id) of the last execution of a page, with a digest of the
filters it was made for: it stays stable while new executions arrive (they sort before it),
and a cursor sent with other filters is refused rather than silently paging something else.
One query per page, served by the index on execution (api_key, created_at DESC, id DESC).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime
from uuid import UUID

import msgspec

from web.domain import pool
from web.domain.errors import InvalidInput
from web.domain.statuses import ExecutionStatus
from web.domain.types import ReadModel, from_row

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
STATUSES = tuple(status.value for status in ExecutionStatus)
SUMMARY_COLUMNS = (
    "id, workflow, status, approval_status, started_at, completed_at, description, created_at"
)


class ExecutionSummary(ReadModel, frozen=True):
    id: UUID
    workflow: str
    status: str
    approval_status: str | None
    started_at: datetime
    completed_at: datetime | None
    description: str | None
    created_at: datetime


class ExecutionPage(msgspec.Struct, frozen=True):
    executions: list[ExecutionSummary]
    next_cursor: str | None


class PageQuery(msgspec.Struct, frozen=True):
    """What one page asks for, checked (`page_query`)."""

    statuses: tuple[str, ...]
    workflow_id: str | None
    limit: int
    after: tuple[datetime, UUID] | None  # the last execution of the previous page


class _Cursor(msgspec.Struct, frozen=True, array_like=True):
    created_at: datetime
    id: UUID
    filters: str


def _filters_digest(statuses: tuple[str, ...], workflow_id: str | None) -> str:
    canonical = msgspec.json.encode([sorted(set(statuses)), workflow_id])
    return hashlib.sha256(canonical).hexdigest()[:16]


def _encode_cursor(entry: ExecutionSummary, digest: str) -> str:
    raw = msgspec.json.encode(_Cursor(entry.created_at, entry.id, digest))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> _Cursor:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=_Cursor)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidInput("cursor is not a cursor this API returned") from None


def page_query(
    statuses: list[str], workflow_id: str | None, limit: str | None, cursor: str | None
) -> PageQuery:
    """The query parameters as given (strings); InvalidInput naming the first bad one."""
    unknown = [status for status in statuses if status not in STATUSES]
    if unknown:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}; got {unknown[0]!r}")
    if workflow_id is not None and "\x00" in workflow_id:
        raise InvalidInput("workflowId contains a NUL character (\\u0000)")
    try:
        size = DEFAULT_LIMIT if limit is None else int(limit)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}; got {limit!r}")
    wanted = tuple(dict.fromkeys(statuses))
    after = None
    if cursor is not None:
        decoded = _decode_cursor(cursor)
        if decoded.filters != _filters_digest(wanted, workflow_id):
            raise InvalidInput(
                "cursor belongs to other filters: send it with the status and workflowId "
                "of the request that returned it"
            )
        after = (decoded.created_at, decoded.id)
    return PageQuery(statuses=wanted, workflow_id=workflow_id, limit=size, after=after)


async def list_for_key(api_key_id: UUID, query: PageQuery) -> ExecutionPage:
    """The key's executions matching `query`, newest first, and the cursor of the next page
    (None on the last one). Another key's executions are never seen."""
    conditions = ["api_key = $1"]
    args: list[object] = [api_key_id]
    if query.statuses:
        args.append(list(query.statuses))
        conditions.append(f"status = ANY(${len(args)}::text[])")
    if query.workflow_id is not None:
        args.append(query.workflow_id)
        conditions.append(f"workflow = ${len(args)}")
    if query.after is not None:
        args.extend(query.after)
        conditions.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(query.limit + 1)
    # Only the fixed conditions above are joined in; every value is a $n parameter.
    where = " AND ".join(conditions)
    sql = (
        f"SELECT {SUMMARY_COLUMNS} FROM execution WHERE {where} "  # noqa: S608
        f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}"
    )
    async with pool.connection() as connection:
        rows = await connection.fetch(sql, *args)
    entries = [from_row(dict(row), ExecutionSummary) for row in rows[: query.limit]]
    more = len(rows) > query.limit
    digest = _filters_digest(query.statuses, query.workflow_id)
    return ExecutionPage(
        executions=entries,
        next_cursor=_encode_cursor(entries[-1], digest) if more and entries else None,
    )
