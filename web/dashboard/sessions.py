"""Dashboard sessions in Redis, our own small layer in place of Litestar's server-side sessions
(which store whatever id the cookie carries, so a client could choose its own, and create a
session for every anonymous visit).

- An id is 32 random bytes made here (`secrets.token_urlsafe`), only at sign-in (`start`) and
  when the user's role changed (`rotate`); Redis keeps it hashed (SHA-256), so its keys are no
  cookies. An id Redis does not hold is ignored (and its cookie cleared): no session is created
  for it, nor for any anonymous request.
- A session lasts `max_age` (FLOWGATE_SESSION_MAX_AGE_SECONDS) from sign-in, however active:
  checked on every request against web.domain.clock, and the Redis key expires then too.
- Its CSRF token is made at sign-in and kept in the session. For a signed-in request the
  middleware shows Litestar's CSRF check that token as the `flowgate_csrf` cookie, whatever the
  browser sent (and sends the cookie again when they differ), so a form's token must be this
  session's: a token/cookie pair from another visit is refused.

It subclasses Litestar's session backend, so `request.session` (flash messages, values shown
once) works as before for signed-in users; for anyone else it is a dict that is never stored.
Imports Litestar, redis and web.domain; the handlers call `start`, `rotate`, `end`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from uuid import UUID

import msgspec
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware.csrf import generate_csrf_token
from litestar.middleware.session.base import BaseBackendConfig, BaseSessionBackend
from litestar.types import Empty, Message, Scope, Scopes, ScopeSession
from litestar.utils.scope.state import ScopeState
from redis.asyncio import Redis

from web.domain import clock
from web.domain.users import SignedInUser

Connection = ASGIConnection[Any, Any, Any, Any]

SESSION_COOKIE = "flowgate_session"
CSRF_COOKIE = "flowgate_csrf"
_KEY_PREFIX = "flowgate:session:"
_STATE = "flowgate.session"  # this request's _Current, in the ASGI scope
# Where no dashboard page is (Litestar warns about a pattern that matches "/", like ^(?!/dash…).
NOT_THE_DASHBOARD = ["^/api/", "^/static/", "^/schema", "^/health", "^/favicon.ico"]


class SessionRecord(msgspec.Struct, frozen=True):
    """What Redis keeps for one signed-in session."""

    user_id: UUID
    role: str  # at sign-in or the last rotation; a change of the user's role rotates the id
    signed_in_at: float  # unix seconds (web.domain.clock)
    csrf_token: str
    data: dict[str, Any] = {}  # request.session: flash messages, values shown once


@dataclass
class _Current:
    """This request's session, between the middleware and the handlers."""

    config: SessionConfig
    record: SessionRecord | None = None
    session_id: str | None = None
    stored_data: bytes = b"{}"  # the data as loaded (or last saved): saved again only if changed
    send_session_cookie: bool = False  # a new id: start() or rotate()
    clear_session_cookie: bool = False  # an unknown or ended id
    send_csrf_cookie: bool = False  # the browser's CSRF cookie is not the session's
    clear_csrf_cookie: bool = False  # signed out: the next page gets an anonymous one


def _redis_key(session_id: str) -> str:
    return _KEY_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


def _redis(connection: Connection) -> Redis:
    redis: Redis = connection.app.state.arq
    return redis


def _current(scope: Scope) -> _Current | None:
    current: _Current | None = cast(dict[str, Any], scope).get(_STATE)
    return current


def _encode(data: object) -> bytes:
    return msgspec.json.encode(data)


def _decode(raw: bytes) -> SessionRecord | None:
    """A stored record; None for one this version cannot read (the user signs in again)."""
    try:
        return msgspec.json.decode(raw, type=SessionRecord)
    except msgspec.MsgspecError:
        return None


class SessionBackend(BaseSessionBackend["SessionConfig"]):
    def get_session_id(self, connection: Connection) -> str | None:
        current = _current(connection.scope)
        return current.session_id if current else None

    async def load_from_connection(self, connection: Connection) -> dict[str, Any]:
        current = _Current(config=self.config)
        cast(dict[str, Any], connection.scope)[_STATE] = current
        session_id = connection.cookies.get(self.config.key)
        if not session_id:
            return {}
        redis = _redis(connection)
        raw = await redis.get(_redis_key(session_id))
        record = None if raw is None else _decode(raw)
        if record is not None and clock.now().timestamp() >= expires_at(record, self.config):
            await redis.delete(_redis_key(session_id))
            record = None
        if record is None:
            current.clear_session_cookie = True
            return {}
        current.record, current.session_id = record, session_id
        current.stored_data = _encode(record.data)
        _bind_csrf_token(connection, current, record.csrf_token)
        return dict(record.data)

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: Connection
    ) -> None:
        current = _current(connection.scope)
        if current is None:
            return
        if current.record is not None and current.session_id is not None:
            if scope_session is Empty:  # request.clear_session(): signing out
                await end(connection)
            else:
                values = dict(scope_session) if isinstance(scope_session, dict) else {}
                data = _encode(values)
                if data != current.stored_data:
                    record = msgspec.structs.replace(current.record, data=values)
                    # KEEPTTL: the lifetime counts from sign-in; XX: never revive an ended one.
                    await _redis(connection).set(
                        _redis_key(current.session_id), _encode(record), keepttl=True, xx=True
                    )
        self._set_cookies(current, MutableScopeHeaders.from_message(message))

    def _set_cookies(self, current: _Current, headers: MutableScopeHeaders) -> None:
        config = self.config
        if current.send_session_cookie and current.record and current.session_id:
            remaining = max(int(expires_at(current.record, config) - clock.now().timestamp()), 1)
            headers.add("Set-Cookie", _cookie(config, config.key, current.session_id, remaining))
        elif current.clear_session_cookie:
            headers.add("Set-Cookie", _cookie(config, config.key, "", 0))
        if current.record is not None and (current.send_csrf_cookie or current.send_session_cookie):
            token = current.record.csrf_token
            headers.add("Set-Cookie", _cookie(config, config.csrf_cookie, token, None))
        elif current.clear_csrf_cookie:
            headers.add("Set-Cookie", _cookie(config, config.csrf_cookie, "", 0))


def _cookie(config: SessionConfig, key: str, value: str, max_age: int | None) -> str:
    return Cookie(
        key=key,
        value=value,
        max_age=max_age,
        expires=0 if max_age == 0 else None,
        path=config.path,
        domain=config.domain,
        secure=config.secure,
        httponly=config.httponly,
        samesite=config.samesite,
    ).to_header(header="")


def _bind_csrf_token(connection: Connection, current: _Current, token: str) -> None:
    """Litestar's CSRF middleware (inside this one) compares the form's token with the cookie
    it reads from the scope: for a signed-in request that is the session's token."""
    cookies = dict(connection.cookies)
    if cookies.get(current.config.csrf_cookie) != token:
        current.send_csrf_cookie = True
    cookies[current.config.csrf_cookie] = token
    ScopeState.from_scope(connection.scope).cookies = cookies


def expires_at(record: SessionRecord, config: SessionConfig) -> float:
    return record.signed_in_at + config.max_age


@dataclass
class SessionConfig(BaseBackendConfig[SessionBackend]):
    """The middleware's settings: `SessionConfig(...).middleware` goes in the app's list."""

    _backend_class = SessionBackend

    csrf_secret: str = ""  # FLOWGATE_SECRET_KEY, as the CSRF middleware signs tokens with it
    csrf_cookie: str = CSRF_COOKIE
    key: str = SESSION_COOKIE
    max_age: int = 12 * 3600
    scopes: Scopes = field(default_factory=lambda: {ScopeType.HTTP})
    path: str = "/"
    domain: str | None = None
    secure: bool = False
    httponly: bool = True
    samesite: Literal["lax", "strict", "none"] = "lax"
    exclude: str | list[str] | None = field(default_factory=lambda: list(NOT_THE_DASHBOARD))
    exclude_opt_key: str = "skip_session"


def signed_in(connection: Connection) -> SessionRecord | None:
    """This request's signed-in session (unexpired, issued by us), or None."""
    current = _current(connection.scope)
    return current.record if current else None


def _require_current(connection: Connection) -> _Current:
    current = _current(connection.scope)
    if current is None:
        raise RuntimeError("the session middleware does not run on this path")
    return current


async def _issue(connection: Connection, current: _Current, record: SessionRecord) -> None:
    """Store `record` under a new id (the old one deleted) and send its cookie."""
    redis = _redis(connection)
    session_id = secrets.token_urlsafe(32)
    lifetime = max(int(expires_at(record, current.config) - clock.now().timestamp()), 1)
    await redis.set(_redis_key(session_id), _encode(record), ex=lifetime, nx=True)
    if current.session_id is not None:
        await redis.delete(_redis_key(current.session_id))
    current.record, current.session_id = record, session_id
    current.stored_data = _encode(record.data)
    current.send_session_cookie, current.clear_session_cookie = True, False


async def start(connection: Connection, user: SignedInUser) -> None:
    """Sign `user` in: a new session with a new id and CSRF token, never the id the browser
    sent (that session, if any, is deleted)."""
    current = _require_current(connection)
    record = SessionRecord(
        user_id=user.id,
        role=user.role.value,
        signed_in_at=clock.now().timestamp(),
        csrf_token=generate_csrf_token(secret=current.config.csrf_secret),
    )
    await _issue(connection, current, record)
    connection.scope["session"] = {}


async def rotate(connection: Connection, user: SignedInUser) -> None:
    """The user's role changed since this session's id was issued: the same session (lifetime,
    CSRF token, data) under a new id; the old id stops working."""
    current = _require_current(connection)
    if current.record is None:
        return
    data = connection.scope.get("session")
    record = msgspec.structs.replace(
        current.record, role=user.role.value, data=dict(data) if isinstance(data, dict) else {}
    )
    await _issue(connection, current, record)


async def end(connection: Connection) -> None:
    """Sign out: the session is deleted and both cookies cleared."""
    current = _require_current(connection)
    if current.session_id is not None:
        await _redis(connection).delete(_redis_key(current.session_id))
    current.record, current.session_id = None, None
    current.send_session_cookie = current.send_csrf_cookie = False
    current.clear_session_cookie = current.clear_csrf_cookie = True
    connection.scope["session"] = {}
