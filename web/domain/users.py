"""Dashboard users: argon2 password hashes (computed in threads, off the event loop), roles,
and sign-in with a throttle per client IP and a lockout per email.

Both counters live in Redis, so they hold across web processes: at most
FLOWGATE_SIGN_IN_ATTEMPTS_PER_MINUTE attempts per client IP a minute, and 10 failed sign-ins for
an email within 15 minutes lock it for 15 minutes. Imports only web.domain, Piccolo, redis.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from redis.asyncio import Redis

from web.domain import audit, clock, pool
from web.domain.actors import Actor
from web.domain.errors import (
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from web.domain.field_errors import FieldConflict, FieldError
from web.domain.tables import User

LOCKOUT_FAILURES = 10
LOCKOUT_SECONDS = 15 * 60
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+|[^@\s]+@localhost")
BAD_LOGIN = "Wrong email or password"

SIGN_IN_WINDOW_SECONDS = 60  # the per-IP throttle counts attempts a minute

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))
# argon2 hashes and verifications run here, off the event loop; half the cores at most, so a
# burst of sign-ins leaves CPU for every other request of the process.
_HASHING = ThreadPoolExecutor(
    max_workers=max(1, (os.cpu_count() or 2) // 2), thread_name_prefix="argon2"
)

_T = TypeVar("_T")


async def _off_loop(function: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.get_running_loop().run_in_executor(_HASHING, function, *args)


async def _hash(password: str) -> str:
    return await _off_loop(_hasher.hash, password)


class Role(StrEnum):
    ADMIN = "admin"
    REVIEWER = "reviewer"


@dataclass(frozen=True)
class SignedInUser:
    id: UUID
    email: str
    role: Role
    groups: tuple[str, ...] = ()  # approver groups (an approval step's approverGroups)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


class UserView(msgspec.Struct, frozen=True):
    """A user as the dashboard lists them (never the password hash)."""

    id: UUID
    email: str
    role: Role
    active: bool
    created_at: datetime
    last_login_at: datetime | None
    groups: list[str] = []


_SHOWN = (
    User.id,
    User.email,
    User.role,
    User.active,
    User.created_at,
    User.last_login_at,
    User.groups,
)


def _view(row: dict[str, Any]) -> UserView:
    return msgspec.convert(row, UserView)


def _check_email(email: str) -> str:
    email = email.strip().lower()
    if not EMAIL.fullmatch(email) or len(email) > 320:
        raise FieldError("email", "Enter a valid email address")
    return email


def _check_password(password: str) -> str:
    if len(password) < 10:
        raise FieldError("password", "The password must be at least 10 characters long")
    return password


def _check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise FieldError("role", "Role must be admin or reviewer") from None


async def create_user(email: str, password: str, role: str, *, actor: Actor) -> SignedInUser:
    """A new active user, with its `user.invited` entry; FieldError for a bad email, password
    or role, FieldConflict when the email is taken."""
    email = _check_email(email)
    checked_role = _check_role(role)
    password_hash = await _hash(_check_password(password))
    async with pool.engine().transaction():
        if await User.exists().where(User.email == email):
            raise FieldConflict("email", f"A user with the email {email} already exists")
        user = User(email=email, password_hash=password_hash, role=checked_role)
        await user.save()
        await audit.record(
            actor, "user.invited", "user", user.id, after={"email": email, "role": checked_role}
        )
    return SignedInUser(id=user.id, email=email, role=checked_role)


async def set_password(redis: Redis, email: str, password: str) -> SignedInUser:
    """Give the user a new password and lift a lockout of their email (`flowgate users
    set-password`). NotFound for an unknown email. Sessions already signed in stay."""
    email = email.strip().lower()
    password_hash = await _hash(_check_password(password))
    rows = (
        await User.update({User.password_hash: password_hash})
        .where(User.email == email)
        .returning(User.id, User.email, User.role)
    )
    if not rows:
        raise NotFound(f"No user with the email {email}")
    await redis.delete(_lock_key(email))  # the lockout counter (see sign_in)
    return SignedInUser(id=rows[0]["id"], email=rows[0]["email"], role=Role(rows[0]["role"]))


def generate_password() -> str:
    return secrets.token_urlsafe(12)


async def count_users() -> int:
    return int(await User.count())


def _lock_key(email: str) -> str:
    return f"flowgate:loginfail:{email}"


def _ip_key(client_ip: str) -> str:
    return f"flowgate:signin-ip:{client_ip}"


async def _count_attempt(redis: Redis, key: str, window_seconds: int) -> tuple[int, int]:
    """Count one attempt on `key` (the window starts with the first one), atomically: the
    count after this one, and the seconds left in the window."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, window_seconds, nx=True)
        pipe.ttl(key)
        count, _, ttl = await pipe.execute()
    return int(count), max(int(ttl), 1)


def _in_minutes(seconds: int) -> str:
    minutes = -(-seconds // 60)
    return f"{minutes} minute" + ("s" if minutes != 1 else "")


async def _verify(password_hash: str, password: str) -> bool:
    """argon2 in the hashing threads (it takes ~0.1-0.5 s of CPU), never on the event loop."""
    try:
        return bool(await _off_loop(_hasher.verify, password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


async def sign_in(
    redis: Redis,
    email: str,
    password: str,
    *,
    client_ip: str | None = None,
    attempts_per_minute: int | None = None,
    user_agent: str | None = None,
) -> SignedInUser:
    """The user, or Unauthorized (wrong email or password, inactive user), or TooManyRequests
    while the client IP has made more than `attempts_per_minute` attempts this minute (when
    both are given) or the email is locked out.

    Each attempt is counted before its password is checked, by an atomic INCR: any number of
    parallel guesses (across web processes too) get at most LOCKOUT_FAILURES checks in the
    window; a correct password clears the email's count.

    Audited (`signin.succeeded`, `signin.failed`, and `signin.locked` once, when a lockout
    starts), each with the client's IP and user agent; an attempt refused for its IP's rate
    is not (that limit exists to keep floods out of everything, this trail included)."""
    email = email.strip().lower()
    if client_ip is not None and attempts_per_minute is not None:
        attempts, ttl = await _count_attempt(redis, _ip_key(client_ip), SIGN_IN_WINDOW_SECONDS)
        if attempts > attempts_per_minute:
            raise TooManyRequests(
                f"Too many sign-in attempts from your address. Try again in {_in_minutes(ttl)}",
                ttl,
            )
    key = _lock_key(email)
    attempts, ttl = await _count_attempt(redis, key, LOCKOUT_SECONDS)
    if attempts > LOCKOUT_FAILURES:
        if attempts == LOCKOUT_FAILURES + 1:
            await _record_sign_in("signin.locked", None, email, client_ip, user_agent)
        raise TooManyRequests(
            f"Too many failed sign-ins for this email. Try again in {_in_minutes(ttl)}", ttl
        )
    row = (
        await User.select(User.id, User.email, User.password_hash, User.role, User.active)
        .where(User.email == email)
        .first()
    )
    verified = await _verify(row["password_hash"] if row else _DUMMY_HASH, password)
    if not verified or row is None or not row["active"]:
        user_id = None if row is None else row["id"]
        await _record_sign_in("signin.failed", user_id, email, client_ip, user_agent)
        raise Unauthorized(BAD_LOGIN)  # the attempt stays counted
    await redis.delete(key)
    async with pool.engine().transaction():
        await User.update({User.last_login_at: clock.now()}).where(User.id == row["id"])
        await _record_sign_in(
            "signin.succeeded", row["id"], row["email"], client_ip, user_agent, in_transaction=True
        )
    return SignedInUser(id=row["id"], email=row["email"], role=Role(row["role"]))


async def _record_sign_in(
    action: str,
    user_id: UUID | None,
    email: str,
    client_ip: str | None,
    user_agent: str | None,
    *,
    in_transaction: bool = False,
) -> None:
    """A sign-in's entry. The actor is the email as typed (a user's id only when it names
    one), so failures for unknown emails are on record too."""
    actor = Actor.user(user_id, email, ip=client_ip, user_agent=user_agent)
    if in_transaction:
        await audit.record(actor, action, "user", user_id)
        return
    async with pool.engine().transaction():
        await audit.record(actor, action, "user", user_id)


async def get_active_user(user_id: UUID) -> SignedInUser | None:
    row = (
        await User.select(User.id, User.email, User.role, User.groups)
        .where(User.id == user_id, User.active.eq(True))
        .first()
    )
    if row is None:
        return None
    return SignedInUser(row["id"], row["email"], Role(row["role"]), tuple(row["groups"] or ()))


async def list_users() -> list[UserView]:
    return [_view(row) for row in await User.select(*_SHOWN).order_by(User.email)]


# --- managing users from the dashboard ------------------------------------------------------

CANNOT_DEMOTE_SELF = "You cannot change your own role: ask another admin to do it"
CANNOT_DEACTIVATE_SELF = "You cannot deactivate yourself: ask another admin to do it"


async def invite_user(email: str, role: str, *, actor: Actor) -> tuple[SignedInUser, str]:
    """Create a user with a generated password; returns the user and the password (shown once,
    only its argon2 hash is stored)."""
    password = generate_password()
    return await create_user(email, password, role, actor=actor), password


async def get_user(user_id: UUID) -> UserView:
    """One user as `list_users` shows it; NotFound if there is none."""
    row = await User.select(*_SHOWN).where(User.id == user_id).first()
    if row is None:
        raise NotFound("User not found")
    return _view(row)


async def _lock_user(user_id: UUID) -> dict[str, Any]:
    """Inside a transaction: the user's role and active flag, locked; NotFound if unknown."""
    rows = await User.raw(
        "SELECT role, active FROM dashboard_user WHERE id = {} FOR UPDATE", user_id
    )
    if not rows:
        raise NotFound("User not found")
    return dict(rows[0])


async def change_role(actor: Actor, user_id: UUID, role: str) -> None:
    """Give a user another role, with its `user.role_changed` entry. The actor may not change
    their own role (so an admin is always left); NotFound for an unknown user."""
    checked = _check_role(role)
    async with pool.engine().transaction():
        old = await _lock_user(user_id)
        if str(user_id) == actor.id and checked != old["role"]:
            raise Forbidden(CANNOT_DEMOTE_SELF)
        await User.update({User.role: checked}).where(User.id == user_id)
        await audit.record(
            actor,
            "user.role_changed",
            "user",
            user_id,
            before={"role": old["role"]},
            after={"role": checked},
        )


_GROUP = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def parse_groups(text: str) -> list[str]:
    """Approver groups as an admin types them: names separated by commas or spaces, each 1 to
    64 letters, digits, '_', '-' or '.' (as approverGroups in a workflow file). FieldError
    naming the first that is not."""
    names = [name for name in re.split(r"[,\s]+", text.strip()) if name]
    for name in names:
        if not _GROUP.fullmatch(name):
            raise FieldError(
                "groups",
                f"{name[:70]!r} is not a group name: use letters, digits, '_', '-' or '.', "
                "separated by commas",
            )
    if len(names) > 50:
        raise FieldError("groups", "A user can be in at most 50 groups")
    return sorted(set(names))


async def set_groups(actor: Actor, user_id: UUID, text: str) -> list[str]:
    """Replace a user's approver groups (web.domain.approvals reads them at every decision),
    with its `user.groups_changed` entry; returns them as stored. FieldError for a bad name,
    NotFound for an unknown user."""
    groups = parse_groups(text)
    async with pool.engine().transaction():
        await _lock_user(user_id)
        before = await User.raw("SELECT groups FROM dashboard_user WHERE id = {}", user_id)
        await User.update({User.groups: groups}).where(User.id == user_id)
        await audit.record(
            actor,
            "user.groups_changed",
            "user",
            user_id,
            before={"groups": list(before[0]["groups"] or [])},
            after={"groups": groups},
        )
    return groups


def _sessions_after_key(user_id: UUID) -> str:
    return f"flowgate:sessions-after:{user_id}"


async def end_sessions(redis: Redis, user_id: UUID) -> None:
    """Every session this user signed in before now stops working (in Redis, so for every web
    process), even if the user is reactivated later."""
    await redis.set(_sessions_after_key(user_id), repr(clock.now().timestamp()))


async def session_is_current(redis: Redis, user_id: UUID, signed_in_at: float) -> bool:
    ended = await redis.get(_sessions_after_key(user_id))
    return ended is None or signed_in_at > float(ended)


async def change_active(redis: Redis, actor: Actor, user_id: UUID, active: bool) -> None:
    """Deactivate or reactivate a user, with its `user.deactivated`/`.reactivated` entry; the
    actor may not deactivate themselves. Deactivating ends the user's sessions, so
    reactivating them later needs a new sign-in. NotFound for an unknown user."""
    if str(user_id) == actor.id and not active:
        raise Forbidden(CANNOT_DEACTIVATE_SELF)
    async with pool.engine().transaction():
        old = await _lock_user(user_id)
        await User.update({User.active: active}).where(User.id == user_id)
        await audit.record(
            actor,
            "user.reactivated" if active else "user.deactivated",
            "user",
            user_id,
            before={"active": old["active"]},
            after={"active": active},
        )
    if not active:
        await end_sessions(redis, user_id)
