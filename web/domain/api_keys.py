"""API keys: create, hash, look up, list and revoke.

A key is 64 random lowercase hex characters (256 bits). Only its SHA-256 is stored, plus an
8-character prefix for display; a fast hash is right for a random secret of that size, and keeps
the hot path (every public request) cheap. Imports only web.domain and Piccolo.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from web.domain import clock, webhooks
from web.domain.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from web.domain.tables import ApiKey, Workflow
from web.settings import get_settings

KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
WEBHOOK_EVENTS = webhooks.EVENTS
DEFAULT_MONTHLY_LIMIT = 1000
INVALID_KEY = "Invalid API key"  # public-api.md, "401 Unauthorized"


@dataclass(frozen=True)
class AuthenticatedKey:
    """What a request knows about the key that made it."""

    id: UUID
    name: str
    active: bool
    expires_at: datetime | None
    monthly_limit: int
    allowed_workflows: tuple[str, ...]
    rate_limit_burst: int | None = None
    rate_limit_refill_per_second: float | None = None

    def unusable_reason(self) -> str | None:
        """Why this key may not be used right now (public-api.md "403 Forbidden"), or None."""
        if not self.active:
            return "API key is inactive"
        if self.expires_at is not None and self.expires_at <= clock.now():
            return "API key has expired"
        return None


@dataclass(frozen=True)
class NewKey:
    """A key just created: `secret` is shown once and never stored."""

    id: UUID
    name: str
    secret: str
    prefix: str
    monthly_limit: int
    expires_at: datetime | None
    allowed_workflows: list[str] = field(default_factory=list)
    webhook_url: str | None = None
    webhook_events: list[str] = field(default_factory=list)
    webhook_secret_set: bool = False


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_bearer(authorization: str | None) -> str:
    """The key from an `Authorization: Bearer …` header, or Unauthorized."""
    if not authorization:
        raise Unauthorized(INVALID_KEY)
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip().lower()
    if scheme.lower() != "bearer" or not KEY_PATTERN.fullmatch(value):
        raise Unauthorized(INVALID_KEY)
    return value


async def authenticate(authorization: str | None) -> AuthenticatedKey:
    """Resolve the bearer key; Unauthorized for a missing, malformed or unknown key. The key
    may still be unusable (inactive, expired): see `AuthenticatedKey.unusable_reason`."""
    secret = parse_bearer(authorization)
    row = (
        await ApiKey.select(
            ApiKey.id,
            ApiKey.name,
            ApiKey.active,
            ApiKey.expires_at,
            ApiKey.monthly_limit,
            ApiKey.allowed_workflows,
            ApiKey.rate_limit_burst,
            ApiKey.rate_limit_refill_per_second,
            ApiKey.last_used_at,
        )
        .where(ApiKey.key_hash == hash_key(secret))
        .first()
    )
    if row is None:
        raise Unauthorized(INVALID_KEY)
    last_used = row["last_used_at"]
    current = clock.now()
    if row["active"] and (last_used is None or (current - last_used).total_seconds() > 60):
        # Written at most once a minute per key, so the hot path stays read-only.
        await ApiKey.update({ApiKey.last_used_at: current}).where(ApiKey.id == row["id"])
    return AuthenticatedKey(
        id=row["id"],
        name=row["name"],
        active=row["active"],
        expires_at=row["expires_at"],
        monthly_limit=row["monthly_limit"],
        allowed_workflows=tuple(row["allowed_workflows"] or ()),
        rate_limit_burst=row["rate_limit_burst"],
        rate_limit_refill_per_second=row["rate_limit_refill_per_second"],
    )


async def authenticate_usable(authorization: str | None) -> AuthenticatedKey:
    """`authenticate`, then Forbidden with the reason if the key cannot be used."""
    key = await authenticate(authorization)
    reason = key.unusable_reason()
    if reason:
        raise Forbidden(reason)
    return key


def _check_webhook_events(events: list[str]) -> list[str]:
    unknown = [event for event in events if event not in WEBHOOK_EVENTS]
    if unknown:
        raise InvalidInput(
            f"Unknown webhook event {unknown[0]!r}; expected one of {', '.join(WEBHOOK_EVENTS)}"
        )
    return list(dict.fromkeys(events))


def _check_webhook_url(url: str | None) -> str | None:
    if url is None or not url.strip():
        return None
    settings = get_settings()
    return webhooks.check_url(
        url,
        allow_http=settings.webhook_allow_http,
        allow_private=settings.webhook_allow_private,
    )


async def create_key(
    name: str,
    *,
    monthly_limit: int = DEFAULT_MONTHLY_LIMIT,
    expires_at: datetime | None = None,
    allowed_workflows: list[str] | None = None,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
    webhook_secret: str | None = None,
    rate_limit_burst: int | None = None,
    rate_limit_refill_per_second: float | None = None,
) -> NewKey:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("Name must be between 1 and 200 characters")
    if monthly_limit < 0:
        raise InvalidInput("Monthly limit must be zero or more")
    if rate_limit_burst is not None and rate_limit_burst < 1:
        raise InvalidInput("Burst must be at least 1")
    if rate_limit_refill_per_second is not None and rate_limit_refill_per_second <= 0:
        raise InvalidInput("Refill rate must be more than 0 tokens a second")
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidInput("Expiry must include a time zone (for example 2026-01-01T00:00:00Z)")
    workflows = list(dict.fromkeys(allowed_workflows or []))
    if workflows:
        known = {
            row["id"]
            for row in await Workflow.select(Workflow.id).where(Workflow.id.is_in(workflows))
        }
        missing = [workflow for workflow in workflows if workflow not in known]
        if missing:
            raise InvalidInput(f"Unknown workflow {missing[0]!r}")
    events = _check_webhook_events(
        list(WEBHOOK_EVENTS) if webhook_events is None else webhook_events
    )
    url = _check_webhook_url(webhook_url)
    secret = secrets.token_hex(32)
    key = ApiKey(
        name=name,
        key_hash=hash_key(secret),
        prefix=secret[:8],
        monthly_limit=monthly_limit,
        expires_at=expires_at,
        allowed_workflows=workflows,
        webhook_url=url,
        webhook_events=events,
        webhook_secret=webhook_secret or None,
        rate_limit_burst=rate_limit_burst,
        rate_limit_refill_per_second=rate_limit_refill_per_second,
    )
    await key.save()
    return NewKey(
        id=key.id,
        name=name,
        secret=secret,
        prefix=secret[:8],
        monthly_limit=monthly_limit,
        expires_at=expires_at,
        allowed_workflows=workflows,
        webhook_url=url,
        webhook_events=events,
        webhook_secret_set=bool(webhook_secret),
    )


async def list_keys() -> list[dict[str, Any]]:
    """Every key, newest first, without hash or webhook secret."""
    rows: list[dict[str, Any]] = await ApiKey.select(
        ApiKey.id,
        ApiKey.name,
        ApiKey.prefix,
        ApiKey.active,
        ApiKey.expires_at,
        ApiKey.monthly_limit,
        ApiKey.rate_limit_burst,
        ApiKey.rate_limit_refill_per_second,
        ApiKey.allowed_workflows,
        ApiKey.webhook_url,
        ApiKey.webhook_events,
        ApiKey.created_at,
        ApiKey.last_used_at,
        ApiKey.revoked_at,
    ).order_by(ApiKey.created_at, ascending=False)
    return rows


async def revoke_key(key_id: UUID) -> None:
    """Deactivate a key for good; NotFound for an unknown id. Revoking twice is harmless."""
    updated = (
        await ApiKey.update({ApiKey.active: False, ApiKey.revoked_at: clock.now()})
        .where(ApiKey.id == key_id)
        .returning(ApiKey.id)
    )
    if not updated:
        raise NotFound("API key not found")
