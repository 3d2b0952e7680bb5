"""Bearer-key authentication and rate limiting of the public API, as Litestar guards.

Guards run before the request body is read, which gives the documented order of checks:
key (401) -> key inactive/expired (403) -> rate limit (429) -> workflow exists (404) ->
workflow usable (403) -> body (400, Litestar's parsing) -> quota (403, in the domain call).
What the rate-limit headers need is left in the request state for `limit_headers`.

Handlers read what the guards found, and the app's settings and Redis script client, through
the accessors below rather than through Litestar dependencies: several dependencies of one
handler are resolved in an anyio task group, a task each, which cost about a tenth of an
execute request's CPU (bench/README.md).
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from web.domain import api_keys, limits, metrics, workflows
from web.domain.actors import Actor
from web.domain.api_keys import AuthenticatedKey
from web.domain.errors import Forbidden, TooManyRequests, Unauthorized
from web.domain.script_client import ScriptClient
from web.domain.status_events import StatusListener
from web.domain.workflows import RunnableWorkflow
from web.settings import Settings

Connection = ASGIConnection[Any, Any, Any, Any]


def client_ip(connection: Connection) -> str:
    return connection.client.host if connection.client else "unknown"


def actor_of(connection: Connection) -> Actor:
    """The calling key as the audit trail names it, with the client's address and agent."""
    key = api_key_of(connection)
    return Actor.api_key(
        key.id,
        key.prefix,
        key.name,
        ip=client_ip(connection),
        user_agent=connection.headers.get("user-agent"),
    )


async def require_api_key(connection: Connection, _: BaseRouteHandler) -> None:
    settings = settings_of(connection)
    redis = scripts_of(connection)
    ip = client_ip(connection)
    header = connection.headers.get("authorization")
    try:
        key = await api_keys.authenticate(header, redis)
    except Unauthorized:
        if settings.rate_limit_enabled:
            blocked_ms = await limits.record_auth_failure(
                redis, ip, settings.auth_failures_per_minute
            )
            if blocked_ms:
                metrics.refused("auth_failures")
                raise TooManyRequests(
                    limits.TOO_MANY_FAILED_AUTHENTICATIONS, max(-(-blocked_ms // 1000), 1)
                ) from None
        raise
    reason = key.unusable_reason()
    if settings.rate_limit_enabled:
        bucket = await _take_token(redis, key, reason, ip, settings)
        if bucket.stale:
            # The key changed since this process cached it (revoked, edited, rotated): read
            # it again and take the token by its new settings. Nothing was spent meanwhile.
            key = await api_keys.authenticate(header, redis, fresh=True)
            reason = key.unusable_reason()
            bucket = await _take_token(redis, key, reason, ip, settings)
        if bucket.ip_blocked_ms:
            metrics.refused("auth_failures")
            raise TooManyRequests(limits.TOO_MANY_FAILED_AUTHENTICATIONS, bucket.retry_after)
        connection.state.rate_limit = bucket
        if reason:
            raise Forbidden(reason)
        if not bucket.allowed:
            metrics.refused("rate_limit")
            raise TooManyRequests(limits.RATE_LIMIT_EXCEEDED, bucket.retry_after)
    elif reason:
        raise Forbidden(reason)
    connection.state.api_key = key


async def _take_token(
    redis: ScriptClient, key: AuthenticatedKey, reason: str | None, ip: str, settings: Settings
) -> limits.BucketState:
    """The request's token from the key's bucket (none for an unusable key, which only looks),
    checking the version of a cached key in the same call."""
    return await limits.take_token(
        redis,
        key.id,
        ip,
        capacity=key.rate_limit_burst or settings.rate_limit_burst,
        refill_per_second=key.rate_limit_refill_per_second or settings.rate_limit_refill_per_second,
        failures_allowed=settings.auth_failures_per_minute,
        cost=0 if reason else 1,
        cached_version=key.cached_version,
    )


async def require_runnable_workflow(connection: Connection, _: BaseRouteHandler) -> None:
    connection.state.workflow = await workflows.get_runnable_workflow(
        connection.path_params["workflow_id"], connection.state.api_key
    )


def api_key_of(connection: Connection) -> AuthenticatedKey:
    key: AuthenticatedKey = connection.state.api_key
    return key


def workflow_of(connection: Connection) -> RunnableWorkflow:
    workflow: RunnableWorkflow = connection.state.workflow
    return workflow


def settings_of(connection: Connection) -> Settings:
    settings: Settings = connection.app.state.settings
    return settings


def status_listener_of(connection: Connection) -> StatusListener:
    """The process's LISTEN connection for status streams (web.domain.status_events)."""
    listener: StatusListener = connection.app.state.status_listener
    return listener


def scripts_of(connection: Connection) -> ScriptClient:
    """The app's lean Redis client (web.domain.script_client): rate limits and enqueueing."""
    scripts: ScriptClient = connection.app.state.scripts
    return scripts
