"""Dashboard sessions (web.dashboard.sessions): ids only the server issues, none for anonymous
visits, an absolute lifetime, a new id on sign-in and on a role change, and a CSRF token bound
to the session."""

from __future__ import annotations

import dataclasses
import secrets
from datetime import timedelta

import httpx
from arq.connections import ArqRedis
from litestar import Litestar

from tests.factories import PASSWORD, post_form, serving, sign_in
from web.app import create_app
from web.domain import clock, users
from web.domain.actors import Actor
from web.domain.tables import User
from web.settings import get_settings

SESSION = "flowgate_session"
CSRF = "flowgate_csrf"


def fresh_browser(app: Litestar) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver.local"
    )


async def send(
    app: Litestar,
    method: str,
    url: str,
    cookies: dict[str, str],
    data: dict[str, str] | None = None,
) -> httpx.Response:
    """One request with exactly these cookies (a new cookie jar each time)."""
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    async with fresh_browser(app) as browser:
        return await browser.request(method, url, headers={"Cookie": header}, data=data)


async def anonymous_csrf(app: Litestar) -> str:
    """The CSRF cookie (= form token) an anonymous visit of the login page gets."""
    async with fresh_browser(app) as browser:
        response = await browser.get("/dashboard/login")
    return response.cookies[CSRF]


async def session_keys(redis: ArqRedis) -> list[bytes]:
    return [key for key in await redis.keys("*") if b"session" in key]


async def test_a_session_id_chosen_by_the_client_never_becomes_a_signed_in_session(
    app: Litestar, client: httpx.AsyncClient
) -> None:
    await users.create_user("ana@example.com", PASSWORD, "admin", actor=Actor.system())
    for planted in ("x", secrets.token_hex(32)):
        token = await anonymous_csrf(app)
        form = {"_csrf_token": token, "email": "ana@example.com", "password": PASSWORD}
        response = await send(
            app, "POST", "/dashboard/login", {SESSION: planted, CSRF: token}, form
        )
        assert response.status_code == 303, response.text

        issued = response.cookies[SESSION]
        assert issued != planted and len(issued) >= 43  # 32 random bytes, made by the server
        planted_page = await send(app, "GET", "/dashboard/executions", {SESSION: planted})
        assert planted_page.status_code == 303
        assert planted_page.headers["location"] == "/dashboard/login?next=/dashboard/executions"
        issued_page = await send(app, "GET", "/dashboard/executions", {SESSION: issued})
        assert issued_page.status_code == 200
        assert "ana@example.com · admin" in issued_page.text


async def test_an_id_the_server_never_issued_is_ignored_and_stores_nothing(
    app: Litestar, client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    unknown = secrets.token_hex(32)
    for url in ("/dashboard/executions", "/dashboard/login"):
        response = await send(app, "GET", url, {SESSION: unknown})
        assert response.status_code in (200, 303)
        assert response.cookies.get(SESSION) in (None, "")  # never handed back as a session
    assert await redis.keys("*") == []


async def test_signing_in_again_ends_the_previous_session(
    app: Litestar, client: httpx.AsyncClient
) -> None:
    await users.create_user("ana@example.com", PASSWORD, "admin", actor=Actor.system())
    await users.create_user("bob@example.com", PASSWORD, "reviewer", actor=Actor.system())
    first = (await sign_in(client, "ana@example.com")).cookies[SESSION]

    second = (await sign_in(client, "bob@example.com")).cookies[SESSION]

    assert second != first
    assert (await send(app, "GET", "/dashboard/executions", {SESSION: first})).status_code == 303
    page = await send(app, "GET", "/dashboard/executions", {SESSION: second})
    assert "bob@example.com · reviewer" in page.text


async def test_a_role_change_gives_the_users_session_a_new_id(
    app: Litestar, admin_client: httpx.AsyncClient
) -> None:
    await users.create_user("rita@example.com", PASSWORD, "reviewer", actor=Actor.system())
    async with fresh_browser(app) as rita:
        old = (await sign_in(rita, "rita@example.com")).cookies[SESSION]
        assert (await rita.get("/dashboard/keys")).status_code == 403
        row = await User.select(User.id).where(User.email == "rita@example.com").first()
        assert row is not None

        changed = await post_form(
            admin_client, f"/dashboard/users/{row['id']}/role", {"role": "admin"}
        )
        assert changed.status_code == 303

        keys_page = await rita.get("/dashboard/keys")
        assert keys_page.status_code == 200  # the new role, at once
        new = keys_page.cookies[SESSION]
        assert new != old
        assert (await rita.get("/dashboard/users")).status_code == 200  # the new id works
    assert (await send(app, "GET", "/dashboard/executions", {SESSION: old})).status_code == 303


async def test_anonymous_visits_create_no_session_and_sign_in_creates_one(
    client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    for _ in range(200):
        client.cookies.clear()
        assert (await client.get("/dashboard/login")).status_code == 200
    assert await redis.keys("*") == []

    await users.create_user("ana@example.com", PASSWORD, "reviewer", actor=Actor.system())
    await sign_in(client, "ana@example.com")
    assert len(await session_keys(redis)) == 1
    await post_form(client, "/dashboard/logout")
    assert await session_keys(redis) == []


async def test_a_session_ends_at_its_absolute_lifetime_however_active(redis: ArqRedis) -> None:
    app = create_app(dataclasses.replace(get_settings(), session_max_age_seconds=3600))
    await users.create_user("ana@example.com", PASSWORD, "reviewer", actor=Actor.system())
    async with serving(app), fresh_browser(app) as browser:
        await sign_in(browser, "ana@example.com")
        for _ in range(5):  # in use all along: 55 minutes
            clock.shift(timedelta(minutes=11))
            assert (await browser.get("/dashboard/executions")).status_code == 200

        clock.shift(timedelta(minutes=6))  # 61 minutes after sign-in
        response = await browser.get("/dashboard/executions")

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login?next=/dashboard/executions"
    assert await session_keys(redis) == []  # the expired session is deleted, not kept


async def test_a_csrf_pair_from_an_anonymous_visit_does_not_work_with_a_signed_in_session(
    app: Litestar, admin_client: httpx.AsyncClient
) -> None:
    admin_session = admin_client.cookies[SESSION]
    anonymous = await anonymous_csrf(app)
    form = {"_csrf_token": anonymous, "email": "eve@example.com", "role": "admin"}

    forged = await send(
        app, "POST", "/dashboard/users/new", {SESSION: admin_session, CSRF: anonymous}, form
    )

    assert forged.status_code == 403
    assert "Your form expired or came from elsewhere" in forged.text
    assert await User.count().where(User.email == "eve@example.com") == 0
    # The admin's own token (set at sign-in) still works.
    ok = await post_form(
        admin_client, "/dashboard/users/new", {"email": "eve@example.com", "role": "reviewer"}
    )
    assert ok.status_code == 303
    assert await User.count().where(User.email == "eve@example.com") == 1


async def test_sign_in_replaces_the_anonymous_csrf_token(client: httpx.AsyncClient) -> None:
    await users.create_user("ana@example.com", PASSWORD, "reviewer", actor=Actor.system())
    await client.get("/dashboard/login")
    before = client.cookies[CSRF]

    response = await sign_in(client, "ana@example.com")

    after = response.cookies[CSRF]
    assert after != before
    page = await client.get("/dashboard/executions")
    assert f'"x-csrftoken": "{after}"' in page.text  # the page's token is the session's


async def test_a_browser_that_lost_its_csrf_cookie_gets_the_sessions_token_back(
    admin_client: httpx.AsyncClient,
) -> None:
    token = admin_client.cookies[CSRF]
    admin_client.cookies.delete(CSRF)

    page = await admin_client.get("/dashboard/executions")

    assert page.cookies[CSRF] == token
    assert f'"x-csrftoken": "{token}"' in page.text
    assert (await post_form(admin_client, "/dashboard/logout")).status_code == 303
