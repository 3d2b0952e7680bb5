"""Keyset pagination and capped counts of the dashboard's long lists (executions, approvals).

A page is found by the (created_at, id) of an entry next to it, never by an offset: a link
says "the entries older than this one" or "newer than this one", so a page costs the same at
the millionth entry as at the first, and entries arriving meanwhile never shift a page (no gap,
no repeat). A position travels in a URL as `<microseconds since 1970>_<id hex>`, e.g.
`1764633600000000_0f3c…`; the page's filters travel beside it as they are.

Counts stop at COUNT_CAP: past it a page says "10,000+" instead of counting millions of rows,
and each process remembers for OVER_CAP_SECONDS which counts passed it (capped_count).
Imports only web.domain.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Generic, TypeVar
from uuid import UUID

import msgspec

from web.domain.errors import InvalidInput

if TYPE_CHECKING:
    from web.domain.pool import Connection

COUNT_CAP = 10_000
OVER_CAP_SECONDS = 30.0
_OVER_CAP_KEPT = 1_000
# The counts that passed the cap: (COUNT_CAP, sql, repr(args)) -> when (time.monotonic()).
_over_cap: dict[tuple[object, ...], float] = {}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_POSITION = re.compile(r"(-?[0-9]{1,17})_([0-9a-f]{32})")

T = TypeVar("T")


class Position(msgspec.Struct, frozen=True):
    """Where an entry sits in a list ordered by (created_at, id)."""

    created_at: datetime
    id: UUID

    def encode(self) -> str:
        return f"{(self.created_at - _EPOCH) // _MICROSECOND}_{self.id.hex}"


def decode_position(value: str | None, field: str) -> Position | None:
    """The position of an `older`/`newer` link; InvalidInput for anything else."""
    if not value:
        return None
    matched = _POSITION.fullmatch(value)
    if matched is None:
        raise InvalidInput(f"{field} must be a link from this page")
    try:
        created_at = _EPOCH + int(matched[1]) * _MICROSECOND
    except OverflowError:
        raise InvalidInput(f"{field} must be a link from this page") from None
    return Position(created_at=created_at, id=UUID(hex=matched[2]))


class CappedCount(msgspec.Struct, frozen=True):
    """How many entries match, counted up to COUNT_CAP (`capped`: there are more)."""

    count: int
    capped: bool

    @classmethod
    def of(cls, counted: int) -> CappedCount:
        return cls(count=min(counted, COUNT_CAP), capped=counted > COUNT_CAP)

    @property
    def label(self) -> str:
        return f"{self.count:,}+" if self.capped else f"{self.count:,}"


async def capped_count(connection: Connection, sql: str, *args: object) -> CappedCount:
    """Run `sql`, a count that stops at a LIMIT of COUNT_CAP + 1 (one of `args`).

    A count that passed the cap is remembered by this process for OVER_CAP_SECONDS: the same
    filters then say "10,000+" without reading 10,001 index entries on every page load (2 to 4
    ms of PostgreSQL at ten million rows, figure 9). A count under the cap is made on every
    load, so it is always exact; one that falls under the cap (a deleted key took its
    executions with it) shows so within OVER_CAP_SECONDS. It is a cache of what a page shows,
    not a limit, so it need not be shared between processes."""
    key = (COUNT_CAP, sql, repr(args))  # args hold lists (= ANY, groups)
    now = time.monotonic()
    seen = _over_cap.get(key)
    if seen is not None and now - seen < OVER_CAP_SECONDS:
        return CappedCount(count=COUNT_CAP, capped=True)
    counted = CappedCount.of(int(await connection.fetchval(sql, *args)))
    if counted.capped:
        if len(_over_cap) >= _OVER_CAP_KEPT:  # many filters (dates): start again
            _over_cap.clear()
        _over_cap[key] = now
    else:
        _over_cap.pop(key, None)
    return counted


class Page(msgspec.Struct, Generic[T], frozen=True):
    """One page of a list and the positions its "older" and "newer" links start from."""

    entries: list[T]
    older: Position | None  # entries older than this one exist: the page's last entry
    newer: Position | None  # entries newer than this one exist: the page's first entry
    total: CappedCount
