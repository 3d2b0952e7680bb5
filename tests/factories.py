"""Plain async factories and helpers shared by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import httpx
from arq.connections import ArqRedis
from arq.worker import Worker
from httpx import Response
from litestar import Litestar

from web.domain import api_keys, clock, queue
from web.domain.actors import Actor
from web.domain.tables import ApiKey, Execution, ExecutionRow
from web.domain.workflows import BFSI_WORKFLOW_ID
from web.settings import Settings
from worker.settings import delivery_functions, delivery_startup, functions, shutdown, startup

PUBLIC = "/api/v1/public"
CUSTOMERS = [
    ("John Doe", "Mumbai", "75000-100000", "750"),
    ("Priya Sharma", "Delhi", "50000-75000", "690"),
    ("Arjun Mehta", "Pune", "25000-50000", "610"),
]


def rows(count: int, **overrides: Any) -> list[dict[str, Any]]:
    """`count` valid BFSI input rows, CUST001… with E.164 phones."""
    result = []
    for index in range(count):
        name, city, income, score = CUSTOMERS[index % len(CUSTOMERS)]
        result.append(
            {
                "customerId": f"CUST{index + 1:03d}",
                "name": name,
                "phone": f"+9186105{index:05d}",
                "email": f"customer{index + 1}@example.com",
                "city": city,
                "income_bracket": income,
                "age": str(25 + index % 40),
                "credit_score": score,
                **overrides,
            }
        )
    return result


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def create_key(
    name: str = "test customer", webhook_secret: str | None = None, **settings: Any
) -> api_keys.NewKey:
    """A key with these KeySettings. An expiry in the past (refused by the domain) is written
    afterwards: the key of a test that needs one expired."""
    expires_at = settings.get("expires_at")
    expired = expires_at is not None and expires_at <= clock.now()
    if expired:
        settings["expires_at"] = None
    new = await api_keys.create_key(
        api_keys.KeySettings(name=name, **settings),
        actor=Actor.system(),
        webhook_secret=webhook_secret,
    )
    if expired:
        await ApiKey.update({ApiKey.expires_at: expires_at}).where(ApiKey.id == new.id)
    return new


async def execute(
    client: httpx.AsyncClient,
    secret: str,
    csv_data: list[dict[str, Any]] | None = None,
    workflow_id: str = BFSI_WORKFLOW_ID,
    **body: Any,
) -> Response:
    payload = {"input": {"csvData": rows(3) if csv_data is None else csv_data}, **body}
    return await client.post(
        f"{PUBLIC}/agents/{workflow_id}/execute", json=payload, headers=auth(secret)
    )


async def start(client: httpx.AsyncClient, secret: str, **kwargs: Any) -> str:
    response = await execute(client, secret, **kwargs)
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["executionId"]
    return execution_id


async def execution_row(execution_id: str | UUID) -> dict[str, Any]:
    row = (
        await Execution.select()
        .where(Execution.id == UUID(str(execution_id)))
        .output(load_json=True)
        .first()
    )
    assert row is not None
    result: dict[str, Any] = row
    return result


async def row_states(execution_id: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = (
        await ExecutionRow.select()
        .where(ExecutionRow.execution == UUID(execution_id))
        .order_by(ExecutionRow.position)
        .output(load_json=True)
    )
    return result


@asynccontextmanager
async def serving(app: Litestar) -> AsyncIterator[None]:
    """Run the app's lifespan in a task of its own: anyio wants it entered and exited by the
    same task, which pytest fixtures (setup and teardown in different tasks) do not give."""
    started = asyncio.Event()
    stop = asyncio.Event()

    async def hold() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(hold())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # raises what the startup raised
    try:
        yield
    finally:
        stop.set()
        await task


PASSWORD = "correct horse battery staple"
CSRF_COOKIE = "flowgate_csrf"


async def csrf_token(browser: httpx.AsyncClient, page: str = "/dashboard/login") -> str:
    """The CSRF token of this browser (double-submit: the cookie's value goes in the form)."""
    if CSRF_COOKIE not in browser.cookies:
        await browser.get(page)
    return str(browser.cookies[CSRF_COOKIE])


async def post_form(
    browser: httpx.AsyncClient, url: str, data: dict[str, str] | None = None, **kwargs: Any
) -> Response:
    """A plain HTML form post, CSRF token included, without following the redirect."""
    form = {"_csrf_token": await csrf_token(browser), **(data or {})}
    return await browser.post(url, data=form, **kwargs)


async def sign_in(browser: httpx.AsyncClient, email: str, password: str = PASSWORD) -> Response:
    response = await post_form(
        browser, "/dashboard/login", {"email": email, "password": password, "next": "/dashboard"}
    )
    assert response.status_code == 303, response.text
    return response


class WorkerRunner:
    """Both loops of `flowgate worker` (runs, webhook deliveries), each a real arq Worker in burst
    mode, side by side, again and again until both queues are empty (a run queues deliveries)."""

    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis

    async def __call__(self, settings: Settings | None = None) -> None:
        """Run until the queues are empty; `settings` replaces the worker's (e.g. other delays)."""
        loops = [
            (functions, startup, queue.RUN_QUEUE),
            (delivery_functions, delivery_startup, queue.WEBHOOK_QUEUE),
        ]
        while True:
            await asyncio.gather(
                *(self._burst(jobs(), start, name, settings) for jobs, start, name in loops)
            )
            if not any([await self.redis.zcard(name) for _, _, name in loops]):
                return

    async def _burst(
        self, jobs: list[Any], start: Any, queue_name: str, settings: Settings | None
    ) -> None:
        worker = Worker(
            functions=jobs,
            queue_name=queue_name,
            redis_pool=self.redis,
            burst=True,
            poll_delay=0,
            handle_signals=False,
            on_startup=start,
            on_shutdown=shutdown,
            ctx={} if settings is None else {"settings": settings},
        )
        try:
            await worker.main()
        finally:
            # Not worker.close(): it would close the Redis pool the tests share.
            await shutdown(worker.ctx)
