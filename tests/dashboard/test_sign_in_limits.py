"""Sign-in limits: argon2 off the event loop, a throttle per client address, and a lockout per
email that counts an attempt before checking it (so parallel guesses cannot pass the limit)."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time

import httpx
from litestar import Litestar

from tests.factories import PASSWORD, csrf_token, post_form, serving
from tests.live_server import LiveServer
from web.app import create_app
from web.domain import users
from web.domain.actors import Actor
from web.settings import get_settings


def browser_from(app: Litestar, ip: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, 50000)),
        base_url="http://testserver.local",
    )


async def test_sign_ins_from_one_address_are_throttled(redis: object) -> None:
    app = create_app(dataclasses.replace(get_settings(), sign_in_attempts_per_minute=5))
    await users.create_user("ana@example.com", PASSWORD, "reviewer", actor=Actor.system())
    async with serving(app), browser_from(app, "10.0.0.1") as attacker:
        for index in range(5):  # a different email each time: the per-email lockout never sees it
            wrong = await post_form(
                attacker,
                "/dashboard/login",
                {"email": f"guess{index}@example.com", "password": "x"},
            )
            assert wrong.status_code == 400

        throttled = await post_form(
            attacker, "/dashboard/login", {"email": "ana@example.com", "password": PASSWORD}
        )

        assert throttled.status_code == 429
        assert "Too many sign-in attempts from your address. Try again in 1 minute" in (
            throttled.text
        )
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        assert 'name="email"' in throttled.text  # the login page, with its form
        async with browser_from(app, "10.0.0.2") as other:
            ok = await post_form(
                other, "/dashboard/login", {"email": "ana@example.com", "password": PASSWORD}
            )
        assert ok.status_code == 303


async def test_parallel_wrong_passwords_are_counted_before_they_are_checked(
    client: httpx.AsyncClient,
) -> None:
    await users.create_user("ana@example.com", PASSWORD, "reviewer", actor=Actor.system())
    token = await csrf_token(client)

    async def guess(index: int) -> int:
        form = {"_csrf_token": token, "email": "ana@example.com", "password": f"guess {index}"}
        return (await client.post("/dashboard/login", data=form)).status_code

    statuses = await asyncio.gather(*(guess(index) for index in range(50)))

    # users.LOCKOUT_FAILURES is 10: ten guesses checked (400), forty refused unchecked (429).
    assert sorted(statuses) == [400] * 10 + [429] * 40
    right = await post_form(
        client, "/dashboard/login", {"email": "ana@example.com", "password": PASSWORD}
    )
    assert right.status_code == 429
    assert "Too many failed sign-ins for this email" in right.text


async def test_parallel_sign_ins_do_not_stall_the_server() -> None:
    """24 sign-ins (~0.1-0.5 s of argon2 each) in flight; /health keeps answering meanwhile."""
    server = LiveServer().start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as browser:
            await browser.get("/dashboard/login")
            token = browser.cookies["flowgate_csrf"]

            async def sign_in_attempt() -> int:
                form = {
                    "_csrf_token": token,
                    "email": f"{secrets.token_hex(6)}@example.com",
                    "password": "wrong password",
                }
                return (await browser.post("/dashboard/login", data=form)).status_code

            attempts = [asyncio.create_task(sign_in_attempt()) for _ in range(24)]
            await asyncio.sleep(0.3)  # the sign-ins reach the server first
            health_times = []
            while not all(attempt.done() for attempt in attempts) or not health_times:
                started = time.monotonic()
                health = await browser.get("/health")
                health_times.append(time.monotonic() - started)
                assert health.status_code == 200
                await asyncio.sleep(0.05)
            statuses = await asyncio.gather(*attempts)
    finally:
        server.stop()

    assert statuses == [400] * 24
    # Generous for a loaded 2-core box: with argon2 on the event loop, /health waits behind
    # every queued verification (seconds); off it, it answers at once.
    assert max(health_times) < 1.5, health_times
