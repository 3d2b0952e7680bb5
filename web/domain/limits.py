"""The monthly execution quota per API key, counted in PostgreSQL.

One statement both checks and increments, so any number of web processes can never pass the
limit together. Called inside the transaction that creates the execution: if anything after it
fails, the count rolls back with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from web.domain import clock
from web.domain.errors import Forbidden
from web.domain.tables import ApiKeyUsage

USAGE_LIMIT_EXCEEDED = "API key usage limit exceeded"  # public-api.md, "403 Forbidden"


@dataclass(frozen=True)
class QuotaState:
    limit: int
    used: int
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


def month_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def next_month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    if moment.month == 12:
        return datetime(moment.year + 1, 1, 1, tzinfo=UTC)
    return datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)


async def consume_quota(api_key_id: UUID, limit: int) -> QuotaState:
    """Count one execution for this key and month, or raise Forbidden if it would pass `limit`."""
    current = clock.now()
    if limit <= 0:
        raise Forbidden(USAGE_LIMIT_EXCEEDED)
    rows = await ApiKeyUsage.raw(
        "INSERT INTO api_key_usage (id, api_key, month, used) "
        "VALUES (gen_random_uuid(), {}, {}, 1) "
        "ON CONFLICT (api_key, month) DO UPDATE SET used = api_key_usage.used + 1 "
        "WHERE api_key_usage.used < {} "
        "RETURNING used",
        api_key_id,
        month_of(current),
        limit,
    )
    if not rows:
        raise Forbidden(USAGE_LIMIT_EXCEEDED)
    return QuotaState(limit=limit, used=rows[0]["used"], resets_at=next_month_start(current))


async def usage_this_month(api_key_id: UUID) -> int:
    row = (
        await ApiKeyUsage.select(ApiKeyUsage.used)
        .where(ApiKeyUsage.api_key == api_key_id, ApiKeyUsage.month == month_of(clock.now()))
        .first()
    )
    return int(row["used"]) if row else 0
