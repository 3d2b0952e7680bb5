"""Can this process reach PostgreSQL and Redis? One line per service that does not answer, with
what was tried and what to do, for the `flowgate` command to print instead of a traceback.

Plain Python (sockets and the settings): no Litestar, no Piccolo.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg
import redis.exceptions

from web.settings import Settings

PROBE_TIMEOUT_SECONDS = 1.0

# What a failure to reach a server looks like, from asyncpg, redis-py or the socket itself. Only
# a hint: the servers are probed before anything is blamed on them.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InvalidCatalogNameError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


@dataclass(frozen=True)
class Service:
    name: str
    variable: str
    host: str
    port: int

    def advice(self) -> str:
        return (
            f"cannot reach {self.name} at {self.host}:{self.port}: "
            f"start it with make run, or set {self.variable}"
        )


def services(settings: Settings) -> list[Service]:
    database = urlsplit(settings.database_url)
    cache = urlsplit(settings.redis_url)
    return [
        Service("PostgreSQL", "DATABASE_URL", database.hostname or "127.0.0.1",
                database.port or 5432),
        Service("Redis", "REDIS_URL", cache.hostname or "127.0.0.1", cache.port or 6379),
    ]  # fmt: skip


def answers(host: str, port: int, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def unreachable(settings: Settings, only: tuple[str, ...] | None = None) -> list[Service]:
    """The services (all, or those named in `only`) whose port does not accept a connection."""
    return [
        service
        for service in services(settings)
        if (only is None or service.name in only) and not answers(service.host, service.port)
    ]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def blame(settings: Settings, exc: BaseException) -> Service | None:
    """The service `exc` failed to reach, if it looks like a connection error and that service
    does not answer now (Redis first when the error is redis-py's); else None."""
    chain = list(_chain(exc))
    if not any(isinstance(e, CONNECTION_ERRORS) for e in chain):
        return None
    redis_error = any(isinstance(e, redis.exceptions.RedisError) for e in chain)
    down = unreachable(settings)
    down.sort(key=lambda service: service.name != "Redis" if redis_error else 0)
    return down[0] if down else None


def explain(settings: Settings, exc: BaseException) -> str | None:
    """One line for an error that comes from the services rather than the command: a server out
    of reach, or a database that was never migrated. None for anything else."""
    culprit = blame(settings, exc)
    if culprit is not None:
        return culprit.advice()
    if any(isinstance(e, asyncpg.exceptions.UndefinedTableError) for e in _chain(exc)):
        database = urlsplit(settings.database_url)
        return (
            f"the database {database.path.lstrip('/')!r} at {database.hostname}:"
            f"{database.port or 5432} has no flowgate tables: run flowgate migrate (make run does)"
        )
    return None
