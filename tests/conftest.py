"""Test setup: environment first, then imports.

Tests run against the real PostgreSQL and Redis that `make test` provides (DATABASE_URL /
REDIS_URL), in a database and a Redis DB of their own: `<dbname>_test` and DB 15. Migrations run
once per session through the real `flowgate migrate`; after each test every table is truncated,
the BFSI workflow re-seeded and the Redis DB flushed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

BASE_DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/flowgate")
BASE_REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


# FLOWGATE_TEST_DATABASE / FLOWGATE_TEST_REDIS_DB let two test runs share one server.
TEST_DB_NAME = os.environ.get(
    "FLOWGATE_TEST_DATABASE", (urlsplit(BASE_DATABASE_URL).path.lstrip("/") or "flowgate") + "_test"
)
os.environ["DATABASE_URL"] = _with_path(BASE_DATABASE_URL, "/" + TEST_DB_NAME)
os.environ["REDIS_URL"] = _with_path(
    BASE_REDIS_URL, "/" + os.environ.get("FLOWGATE_TEST_REDIS_DB", "15")
)
os.environ["PICCOLO_CONF"] = "piccolo_conf"
os.environ["FLOWGATE_LOG_LEVEL"] = "WARNING"
# Most tests make more requests than the spec's burst of 10 allows; the limiter's own tests
# give their keys the spec's figures (tests/api/test_rate_limits.py).
os.environ.setdefault("FLOWGATE_RATE_LIMIT_BURST", "10000")
os.environ.setdefault("FLOWGATE_AUTH_FAILURES_PER_MINUTE", "10000")
os.environ.setdefault("FLOWGATE_SIGN_IN_ATTEMPTS_PER_MINUTE", "10000")
# Webhooks go to tests/receiver.py on 127.0.0.1 over http, with the 1/5/15 s schedule and the
# 10 s timeout scaled down (tests/worker/test_webhooks.py checks the real defaults too).
os.environ.setdefault("FLOWGATE_WEBHOOK_ALLOW_HTTP", "true")
os.environ.setdefault("FLOWGATE_WEBHOOK_ALLOW_PRIVATE", "true")
os.environ.setdefault("FLOWGATE_WEBHOOK_RETRY_DELAYS", "0.1,0.5,1.5")
os.environ.setdefault("FLOWGATE_WEBHOOK_TIMEOUT_SECONDS", "1")
os.environ.setdefault("FLOWGATE_SECRET_KEY", "test-secret-key-for-csrf-tokens-only")
# Revocations, edits and rotations must show at once in most tests; the key cache has its own.
os.environ.setdefault("FLOWGATE_KEY_CACHE_SECONDS", "0")

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import pytest  # noqa: E402
from arq import create_pool  # noqa: E402
from arq.connections import ArqRedis, RedisSettings  # noqa: E402
from litestar import Litestar  # noqa: E402

from tests import factories  # noqa: E402
from tests.receiver import Receiver  # noqa: E402
from web.app import create_app  # noqa: E402
from web.domain import api_keys, clock, users, workflows  # noqa: E402
from web.domain.actors import Actor  # noqa: E402
from web.domain.pool import start_pool  # noqa: E402
from web.settings import get_settings  # noqa: E402

TABLES = (
    "api_key, api_key_usage, workflow, execution, execution_row, sandbox_message, "
    "webhook_event, webhook_attempt, dashboard_user, idempotent_request, approval_submission, "
    "notification, notification_attempt, whatsapp_notification, suppression"
)


async def reset_audit_trail() -> None:
    """The audit tables refuse TRUNCATE (their triggers): as the tests' superuser, in replica
    mode, where ordinary triggers do not fire; the chain starts again from its genesis."""
    from piccolo_conf import DB

    connection = await DB.get_new_connection()
    try:
        async with connection.transaction():
            await connection.execute("SET LOCAL session_replication_role = replica")
            await connection.execute("TRUNCATE audit_entry, audit_checkpoint")
            await connection.execute("UPDATE audit_head SET seq = 0, hash = $1", "0" * 64)
    finally:
        await connection.close()


def _recreate_test_database() -> None:
    async def recreate() -> None:
        admin = await asyncpg.connect(_with_path(BASE_DATABASE_URL, "/postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{TEST_DB_NAME}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{TEST_DB_NAME}"')
        finally:
            await admin.close()

    import asyncio

    asyncio.run(recreate())


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    _recreate_test_database()
    # The real command, on an empty database: the migrations are tested by every run.
    result = subprocess.run(
        [sys.executable, "-m", "web.cli", "migrate"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise pytest.UsageError(f"flowgate migrate failed:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="session")
async def db_pool() -> AsyncIterator[None]:
    from piccolo_conf import DB

    await start_pool(DB, min_size=2, max_size=20)
    yield
    await DB.close_connection_pool()


@pytest.fixture(scope="session")
async def redis(db_pool: None) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(RedisSettings.from_dsn(os.environ["REDIS_URL"]))
    yield pool
    await pool.aclose()


@pytest.fixture(autouse=True)
async def clean_state(redis: ArqRedis) -> AsyncIterator[None]:
    yield
    from piccolo_conf import DB

    clock.reset()
    api_keys.KEY_CACHE.clear()
    await DB.run_ddl(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    await reset_audit_trail()
    await workflows.seed_workflows()
    await redis.flushdb()


@pytest.fixture
def app(redis: ArqRedis) -> Litestar:
    return create_app(get_settings())


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app, in the tests' own event loop (Litestar's AsyncTestClient runs
    the app on another thread's loop, which a shared asyncpg pool cannot follow)."""
    async with (
        factories.serving(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
        ) as test_client,
    ):
        yield test_client


@pytest.fixture
async def api_key(db_pool: None) -> str:
    """A fresh key's secret, allowed every workflow."""
    return (await factories.create_key()).secret


@pytest.fixture
async def other_api_key(db_pool: None) -> str:
    return (await factories.create_key(name="other customer")).secret


@pytest.fixture
def run_worker(redis: ArqRedis) -> factories.WorkerRunner:
    """`await run_worker()` runs a real arq worker in burst mode until the queue is empty."""
    return factories.WorkerRunner(redis)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


async def _signed_in(app: Litestar, role: str) -> AsyncIterator[httpx.AsyncClient]:
    email = f"{role}@example.com"
    await users.create_user(email, factories.PASSWORD, role, actor=Actor.system())
    async with (
        factories.serving(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
        ) as browser,
    ):
        await factories.sign_in(browser, email)
        yield browser


@pytest.fixture
async def admin_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """A dashboard session of an admin (admin@example.com)."""
    async for browser in _signed_in(app, "admin"):
        yield browser


@pytest.fixture
async def reviewer_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """A dashboard session of a reviewer (reviewer@example.com)."""
    async for browser in _signed_in(app, "reviewer"):
        yield browser
