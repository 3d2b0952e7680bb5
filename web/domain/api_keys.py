"""API keys: create, hash, look up, list, edit, rotate and revoke.

A key is 64 random lowercase hex characters (256 bits). Only its SHA-256 is stored, plus an
8-character prefix for display; a fast hash is right for a random secret of that size, and keeps
the hot path (every public request) cheap. A rotated key's old hash stays valid until the end of
the grace period chosen (`previous_key_hash`, `previous_key_expires_at`).
Imports only web.domain and Piccolo.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

import msgspec
from redis.asyncio import Redis

from web.domain import audit, clock, key_versions, limits, pool, webhooks
from web.domain.actors import Actor
from web.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from web.domain.field_errors import FieldError
from web.domain.script_client import ScriptClient
from web.domain.tables import ApiKey, Workflow
from web.settings import get_settings

KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
WEBHOOK_EVENTS = webhooks.EVENTS
DEFAULT_WEBHOOK_EVENTS = webhooks.DEFAULT_EVENTS  # what a key gets when it names none
DEFAULT_MONTHLY_LIMIT = 1000
INVALID_KEY = "Invalid API key"  # public-api.md, "401 Unauthorized"
INT_MAX = 2**31 - 1  # the integer columns' ceiling
DEFAULT_ROTATION_GRACE = timedelta(hours=24)
MAX_ROTATION_GRACE = timedelta(days=30)
GRACE_OUT_OF_RANGE = "Grace period must be between 0 and 720 hours"
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a label, not a secret)


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
    prefix: str = ""  # the secret's first 8 characters: how the audit trail names the key
    # Served from this process's cache: the (Redis key, version) the rate limiter checks, so a
    # change of the key made anywhere is seen on the next request (web.domain.key_versions).
    cached_version: tuple[str, str] | None = None

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


class _KeyCache:
    """Keys recently looked up, per process, for `ttl` seconds: most public requests then need
    no query for their key. Each entry carries the version of its secret it was read at, which
    the rate limiter compares on every request: a revoked or edited key takes effect on the next
    request (web.domain.key_versions), and within `ttl` even if Redis lost the change. Expiry is
    checked on every request; unknown keys are never cached."""

    def __init__(self, size: int = 10_000, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.monotonic = monotonic  # the seconds clock of `ttl` (a test may set its own)
        self._entries: dict[str, tuple[float, datetime | None, AuthenticatedKey]] = {}

    def get(self, digest: str, ttl: float) -> AuthenticatedKey | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        stored_at, cutoff, key = entry
        if self.monotonic() - stored_at > ttl or (cutoff is not None and clock.now() >= cutoff):
            del self._entries[digest]
            return None
        return key

    def put(
        self, digest: str, key: AuthenticatedKey, cutoff: datetime | None, version: str
    ) -> None:
        """Cache `key` as read after its secret's version was `version`."""
        if len(self._entries) >= self.size:
            self._entries.pop(next(iter(self._entries)))  # the oldest entry
        cached = dataclasses.replace(key, cached_version=(key_versions.redis_key(digest), version))
        self._entries[digest] = (self.monotonic(), cutoff, cached)

    def forget(self, digest: str) -> None:
        self._entries.pop(digest, None)

    def clear(self) -> None:
        self._entries.clear()


KEY_CACHE = _KeyCache()


async def authenticate(
    authorization: str | None, redis: ScriptClient | Redis | None = None, *, fresh: bool = False
) -> AuthenticatedKey:
    """Resolve the bearer key; Unauthorized for a missing, malformed or unknown key. The key
    may still be unusable (inactive, expired): see `AuthenticatedKey.unusable_reason`.
    A rotated key's previous secret is accepted until its grace period ends. Given `redis`,
    lookups are cached for FLOWGATE_KEY_CACHE_SECONDS (see `_KeyCache`) unless `fresh`; a cached
    key carries the version the caller must check (`cached_version`, in limits.take_token)."""
    secret = parse_bearer(authorization)
    digest = hash_key(secret)
    ttl = get_settings().key_cache_seconds if redis is not None else 0
    if ttl > 0 and not fresh:
        cached = KEY_CACHE.get(digest, ttl)
        if cached is not None:
            return cached
    # Read before the row, so that a change committed meanwhile leaves the cached version
    # behind (key_versions); only when the answer will be cached.
    version = await key_versions.read(redis, digest) if redis is not None and ttl > 0 else None
    current = clock.now()
    row = (
        await ApiKey.select(
            ApiKey.id,
            ApiKey.name,
            ApiKey.prefix,
            ApiKey.key_hash,
            ApiKey.previous_key_expires_at,
            ApiKey.active,
            ApiKey.expires_at,
            ApiKey.monthly_limit,
            ApiKey.allowed_workflows,
            ApiKey.rate_limit_burst,
            ApiKey.rate_limit_refill_per_second,
            ApiKey.last_used_at,
        )
        # One query on two indexed columns (a BitmapOr): this is every public request.
        .where(
            (ApiKey.key_hash == digest)
            | ((ApiKey.previous_key_hash == digest) & (ApiKey.previous_key_expires_at > current))
        )
        .first()
    )
    if row is None:
        raise Unauthorized(INVALID_KEY)
    last_used = row["last_used_at"]
    if row["active"] and (last_used is None or (current - last_used).total_seconds() > 60):
        # Written at most once a minute per key, so the hot path stays read-only.
        await ApiKey.update({ApiKey.last_used_at: current}).where(ApiKey.id == row["id"])
    key = AuthenticatedKey(
        id=row["id"],
        name=row["name"],
        active=row["active"],
        expires_at=row["expires_at"],
        monthly_limit=row["monthly_limit"],
        allowed_workflows=tuple(row["allowed_workflows"] or ()),
        rate_limit_burst=row["rate_limit_burst"],
        rate_limit_refill_per_second=row["rate_limit_refill_per_second"],
        prefix=row["prefix"],
    )
    if version is not None:
        # A previous secret stays cached no longer than its grace period.
        by_previous = row["key_hash"] != digest
        cutoff = row["previous_key_expires_at"] if by_previous else None
        KEY_CACHE.put(digest, key, cutoff, version)
    return key


async def authenticate_usable(authorization: str | None) -> AuthenticatedKey:
    """`authenticate`, then Forbidden with the reason if the key cannot be used."""
    key = await authenticate(authorization)
    reason = key.unusable_reason()
    if reason:
        raise Forbidden(reason)
    return key


class KeySettings(msgspec.Struct, frozen=True, kw_only=True):
    """The editable settings of a key: what the CLI's options and the dashboard's form give
    `create_key` and `update_key` alike (`check_settings` checks every field)."""

    name: str
    monthly_limit: int = DEFAULT_MONTHLY_LIMIT
    expires_at: datetime | None = None
    allowed_workflows: list[str] = msgspec.field(default_factory=list)
    webhook_url: str | None = None
    webhook_events: list[str] | None = None  # None: every event
    rate_limit_burst: int | None = None
    rate_limit_refill_per_second: float | None = None


def _check_webhook_events(events: list[str]) -> list[str]:
    unknown = [event for event in events if event not in WEBHOOK_EVENTS]
    if unknown:
        raise FieldError(
            "webhook_events",
            f"Unknown webhook event {unknown[0]!r}; expected one of {', '.join(WEBHOOK_EVENTS)}",
        )
    return list(dict.fromkeys(events))


def _check_webhook_url(url: str | None) -> str | None:
    if url is None or not url.strip():
        return None
    settings = get_settings()
    try:
        return webhooks.check_url(
            url,
            allow_http=settings.webhook_allow_http,
            allow_private=settings.webhook_allow_private,
        )
    except InvalidInput as exc:
        raise FieldError("webhook_url", exc.message) from None


async def check_settings(settings: KeySettings) -> KeySettings:
    """The settings normalised (name stripped, duplicates dropped, every event when None), or
    FieldError naming the first field with a problem (create and edit alike)."""
    name = settings.name.strip()
    if not name or len(name) > 200:
        raise FieldError("name", "Name must be between 1 and 200 characters")
    if settings.monthly_limit < 0:
        raise FieldError("monthly_limit", "Monthly limit must be zero or more")
    if settings.monthly_limit > INT_MAX:
        raise FieldError("monthly_limit", f"Monthly limit must be at most {INT_MAX}")
    burst = settings.rate_limit_burst
    if burst is not None and burst < 1:
        raise FieldError("rate_limit_burst", "Burst must be at least 1")
    if burst is not None and burst > INT_MAX:
        raise FieldError("rate_limit_burst", f"Burst must be at most {INT_MAX}")
    refill = settings.rate_limit_refill_per_second
    if refill is not None and refill <= 0:
        raise FieldError(
            "rate_limit_refill_per_second", "Refill rate must be more than 0 tokens a second"
        )
    expires_at = settings.expires_at
    if expires_at is not None and expires_at.tzinfo is None:
        raise FieldError(
            "expires_at", "Expiry must include a time zone (for example 2026-01-01T00:00:00Z)"
        )
    if expires_at is not None and expires_at <= clock.now():
        # A key born expired (or edited into the past) could never be used: say so instead.
        raise FieldError("expires_at", "Expiry must be in the future")
    workflows = list(dict.fromkeys(settings.allowed_workflows))
    if workflows:
        known = {
            row["id"]
            for row in await Workflow.select(Workflow.id).where(Workflow.id.is_in(workflows))
        }
        missing = [workflow for workflow in workflows if workflow not in known]
        if missing:
            raise FieldError("allowed_workflows", f"Unknown workflow {missing[0]!r}")
    events = settings.webhook_events
    return msgspec.structs.replace(
        settings,
        name=name,
        allowed_workflows=workflows,
        webhook_url=_check_webhook_url(settings.webhook_url),
        webhook_events=_check_webhook_events(
            list(DEFAULT_WEBHOOK_EVENTS) if events is None else events
        ),
    )


def _stored(checked: KeySettings) -> dict[str, Any]:
    """The columns a checked KeySettings writes, on create and on edit (its fields are named
    as the api_key table's columns)."""
    return msgspec.structs.asdict(checked)


def generate_webhook_secret() -> str:
    """A webhook signing secret (shown once; stored as it is, since signing needs it)."""
    return WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)


def _audited(values: dict[str, Any]) -> dict[str, Any]:
    """A key's settings as its audit entries show them: never a hash or a secret."""
    shown = {k: v for k, v in values.items() if k not in ("key_hash", "previous_key_hash")}
    if "webhook_secret" in shown:
        shown["webhook_secret"] = "set" if shown["webhook_secret"] else None
    return shown


async def create_key(
    settings: KeySettings, *, actor: Actor, webhook_secret: str | None = None
) -> NewKey:
    """Check the settings and store a new key with its `key.created` entry; its secret is in
    the answer only (shown once). FieldError for a setting with a problem."""
    checked = await check_settings(settings)
    secret = secrets.token_hex(32)
    key = ApiKey(
        **_stored(checked),
        key_hash=hash_key(secret),
        prefix=secret[:8],
        webhook_secret=webhook_secret or None,
    )
    async with pool.engine().transaction():
        await key.save()
        after = {**_stored(checked), "prefix": key.prefix, "webhook_secret": webhook_secret}
        await audit.record(actor, "key.created", "api_key", key.id, after=_audited(after))
    return NewKey(
        id=key.id,
        name=checked.name,
        secret=secret,
        prefix=secret[:8],
        monthly_limit=checked.monthly_limit,
        expires_at=checked.expires_at,
        allowed_workflows=checked.allowed_workflows,
        webhook_url=checked.webhook_url,
        webhook_events=checked.webhook_events or [],
        webhook_secret_set=bool(webhook_secret),
    )


async def list_keys() -> list[KeyView]:
    """Every key, newest first, as `list_keys_with_usage` gives it (never a hash or secret)."""
    return await list_keys_with_usage()


async def revoke_key(redis: ScriptClient | Redis, key_id: UUID, *, actor: Actor) -> None:
    """Deactivate a key for good, refused on the next request by every web process; NotFound
    for an unknown id (and no audit entry). Revoking twice is harmless."""
    async with pool.engine().transaction():
        updated = await ApiKey.raw(
            "UPDATE api_key AS k SET active = false, revoked_at = {} "
            "FROM (SELECT id, active, prefix FROM api_key WHERE id = {} FOR UPDATE) AS old "
            "WHERE k.id = old.id "
            "RETURNING k.key_hash, k.previous_key_hash, old.active AS was_active, old.prefix",
            clock.now(),
            key_id,
        )
        if not updated:
            raise NotFound("API key not found")
        await audit.record(
            actor,
            "key.revoked",
            "api_key",
            key_id,
            before={"active": updated[0]["was_active"], "prefix": updated[0]["prefix"]},
            after={"active": False},
        )
    await _changed(redis, updated[0]["key_hash"], updated[0]["previous_key_hash"])


async def _changed(redis: ScriptClient | Redis, *digests: str | None) -> None:
    """After the commit of a change to a key: its cached look-ups are stale everywhere."""
    await key_versions.raise_versions(redis, [digest for digest in digests if digest])


# --- the dashboard's view of keys: status, usage, edit, rotate --------------------------------

KeyStatus = Literal["active", "revoked", "expired"]


class SecretChange(StrEnum):
    """What an edit does to the webhook secret."""

    KEEP = "keep"
    GENERATE = "generate"  # a new one, shown once
    REMOVE = "remove"


# Every column the dashboard may show: never key_hash, previous_key_hash or webhook_secret.
_SHOWN_COLUMNS = (
    "k.id, k.name, k.prefix, k.active, k.expires_at, k.monthly_limit, k.rate_limit_burst, "
    "k.rate_limit_refill_per_second, k.allowed_workflows, k.webhook_url, k.webhook_events, "
    "k.webhook_secret IS NOT NULL AS webhook_secret_set, k.created_at, k.last_used_at, "
    "k.revoked_at, k.previous_key_expires_at, COALESCE(u.used, 0) AS used"
)


def key_status(active: bool, expires_at: datetime | None) -> KeyStatus:
    """The one rule for what a key is now, for the dashboard and the CLI alike."""
    if not active:
        return "revoked"
    if expires_at is not None and expires_at <= clock.now():
        return "expired"
    return "active"


class KeyView(msgspec.Struct, frozen=True, kw_only=True):
    """A key as the dashboard and the CLI show it: a list entry and a key's page alike, with
    its executions this month (`used`). Never a hash or a webhook secret (only whether one is
    set)."""

    id: UUID
    name: str
    prefix: str
    active: bool
    status: KeyStatus
    expires_at: datetime | None
    monthly_limit: int
    rate_limit_burst: int | None
    rate_limit_refill_per_second: float | None
    allowed_workflows: list[str]
    webhook_url: str | None
    webhook_events: list[str]
    webhook_secret_set: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    previous_valid_until: datetime | None  # the old secret of a rotation, while it still works
    used: int

    @property
    def read_only(self) -> bool:
        """A revoked key can no longer be edited or rotated."""
        return self.status == "revoked"


def _view(row: dict[str, Any]) -> KeyView:
    current = clock.now()
    grace_until = row["previous_key_expires_at"]
    return KeyView(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        active=row["active"],
        status=key_status(row["active"], row["expires_at"]),
        expires_at=row["expires_at"],
        monthly_limit=row["monthly_limit"],
        rate_limit_burst=row["rate_limit_burst"],
        rate_limit_refill_per_second=row["rate_limit_refill_per_second"],
        allowed_workflows=list(row["allowed_workflows"] or []),
        webhook_url=row["webhook_url"],
        webhook_events=list(row["webhook_events"] or []),
        webhook_secret_set=bool(row["webhook_secret_set"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
        # A revoked key's old secret stopped with it (authenticate refuses an inactive key).
        previous_valid_until=(
            grace_until if row["active"] and grace_until and grace_until > current else None
        ),
        used=int(row["used"]),
    )


async def list_keys_with_usage() -> list[KeyView]:
    """Every key, newest first, with its status and its executions this month, in one query."""
    rows = await ApiKey.raw(
        f"SELECT {_SHOWN_COLUMNS} FROM api_key AS k "  # noqa: S608 (constant columns)
        "LEFT JOIN api_key_usage AS u ON u.api_key = k.id AND u.month = {} "
        "ORDER BY k.created_at DESC",
        limits.month_of(clock.now()),
    )
    return [_view(row) for row in rows]


async def get_key(key_id: UUID) -> KeyView:
    """One key as `list_keys_with_usage` shows it; NotFound if there is none."""
    rows = await ApiKey.raw(
        f"SELECT {_SHOWN_COLUMNS} FROM api_key AS k "  # noqa: S608 (constant columns)
        "LEFT JOIN api_key_usage AS u ON u.api_key = k.id AND u.month = {} "
        "WHERE k.id = {}",
        limits.month_of(clock.now()),
        key_id,
    )
    if not rows:
        raise NotFound("API key not found")
    return _view(rows[0])


REVOKED_READ_ONLY = "A revoked API key cannot be edited"


async def update_key(
    redis: ScriptClient | Redis,
    key_id: UUID,
    settings: KeySettings,
    webhook_secret: SecretChange = SecretChange.KEEP,
    *,
    actor: Actor,
) -> str | None:
    """Replace the key's settings (checked as `create_key` checks them). Returns the new webhook
    secret when one was generated (to show once), else None. NotFound for an unknown id,
    Conflict for a revoked key (read-only). The token bucket picks up new burst/refill figures
    at the next request."""
    checked = await check_settings(settings)
    values = _stored(checked)
    new_secret = generate_webhook_secret() if webhook_secret is SecretChange.GENERATE else None
    if webhook_secret is not SecretChange.KEEP:
        values["webhook_secret"] = new_secret
    async with pool.engine().transaction():
        old = (
            await ApiKey.select(*(ApiKey._meta.get_column_by_name(c) for c in _SETTINGS_COLUMNS))
            .where(ApiKey.id == key_id)
            .lock_rows("UPDATE")
            .first()
        )
        updated = (
            await ApiKey.update(**values)
            .where(ApiKey.id == key_id, ApiKey.active.eq(True))
            .returning(ApiKey.key_hash, ApiKey.previous_key_hash)
        )
        if not updated or old is None:
            if old is not None:
                raise Conflict(REVOKED_READ_ONLY)
            raise NotFound("API key not found")
        before = _audited(dict(old))
        after = _audited(values)
        if webhook_secret is SecretChange.GENERATE:
            after["webhook_secret"] = "new"  # noqa: S105 (a label: a new secret replaces any old one)
        changed = [k for k in after if before.get(k) != after[k]]
        await audit.record(
            actor,
            "key.updated",
            "api_key",
            key_id,
            before={k: before.get(k) for k in changed},
            after={k: after[k] for k in changed},
        )
    await _changed(redis, updated[0]["key_hash"], updated[0]["previous_key_hash"])
    return new_secret


@dataclass(frozen=True)
class RotatedKey:
    """The new secret of a rotated key (shown once) and until when the old one still works."""

    id: UUID
    name: str
    secret: str
    prefix: str
    previous_valid_until: datetime


# The columns `update_key` may change, read before it does for the audit entry's `before`.
_SETTINGS_COLUMNS = (
    *KeySettings.__struct_fields__,
    "webhook_secret",
)


def rotation_grace(hours: float | None) -> timedelta:
    """A grace period given in hours (None: the default, 24 h); InvalidInput out of range."""
    if hours is None:
        return DEFAULT_ROTATION_GRACE
    if not 0 <= hours <= MAX_ROTATION_GRACE.total_seconds() / 3600:
        raise InvalidInput(GRACE_OUT_OF_RANGE)
    return timedelta(hours=hours)


async def rotate_key(
    redis: ScriptClient | Redis,
    key_id: UUID,
    grace: timedelta = DEFAULT_ROTATION_GRACE,
    *,
    actor: Actor,
) -> RotatedKey:
    """Give the key a new secret; the current one keeps working for `grace` (0 to 30 days), then
    stops. A previous rotation's old secret, if still in its grace period, stops at once (one
    UPDATE: the old hash moves over as the new one is set). Conflict for a revoked key."""
    if grace < timedelta(0) or grace > MAX_ROTATION_GRACE:
        raise InvalidInput(GRACE_OUT_OF_RANGE)
    secret = secrets.token_hex(32)
    until = clock.now() + grace
    async with pool.engine().transaction():
        rows = await ApiKey.raw(
            "UPDATE api_key AS k SET previous_key_hash = k.key_hash, "
            "  previous_key_expires_at = {}, key_hash = {}, prefix = {} "
            "FROM (SELECT id, key_hash, previous_key_hash, prefix FROM api_key WHERE id = {} "
            "  FOR UPDATE) AS old "
            "WHERE k.id = old.id AND k.active "
            "RETURNING k.name, old.key_hash AS old_hash, old.previous_key_hash AS old_previous, "
            "  old.prefix AS old_prefix",
            until,
            hash_key(secret),
            secret[:8],
            key_id,
        )
        if not rows:
            if await ApiKey.exists().where(ApiKey.id == key_id):
                raise Conflict("A revoked API key cannot be rotated")
            raise NotFound("API key not found")
        await audit.record(
            actor,
            "key.rotated",
            "api_key",
            key_id,
            before={"prefix": rows[0]["old_prefix"]},
            after={"prefix": secret[:8], "previous_valid_until": until},
        )
    # The current secret is now cut off at `until`, a previous one at once.
    await _changed(redis, rows[0]["old_hash"], rows[0]["old_previous"])
    return RotatedKey(
        id=key_id,
        name=rows[0]["name"],
        secret=secret,
        prefix=secret[:8],
        previous_valid_until=until,
    )
