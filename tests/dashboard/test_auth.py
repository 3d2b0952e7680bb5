"""Signing in and out, the lockout, sessions, roles and CSRF."""

from __future__ import annotations

import dataclasses

import httpx
from litestar import Litestar

from tests.factories import PASSWORD, csrf_token, post_form, serving, sign_in
from web.app import create_app
from web.domain import users
from web.domain.actors import Actor
from web.domain.tables import User
from web.settings import get_settings


def browser_for(app: Litestar, scheme: str = "http") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=f"{scheme}://testserver.local"
    )


async def test_pages_need_a_signed_in_user(client: httpx.AsyncClient) -> None:
    response = await client.get("/dashboard/executions")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login?next=/dashboard/executions"

    htmx = await client.get("/dashboard/approvals", headers={"HX-Request": "true"})
    assert htmx.status_code == 200
    assert htmx.headers["HX-Redirect"] == "/dashboard/login?next=/dashboard/approvals"


async def test_signing_in_sets_a_safe_session_cookie_and_opens_the_dashboard(
    client: httpx.AsyncClient,
) -> None:
    await users.create_user("ana@example.com", PASSWORD, "reviewer", actor=Actor.system())
    login = await client.get("/dashboard/login")
    assert login.status_code == 200
    assert 'name="_csrf_token"' in login.text

    response = await sign_in(client, "Ana@Example.com")

    assert response.headers["location"] == "/dashboard"
    cookie = next(c for c in response.headers.get_list("set-cookie") if "flowgate_session" in c)
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower() and "Secure" not in cookie
    page = await client.get("/dashboard/executions")
    assert page.status_code == 200
    assert "ana@example.com · reviewer" in page.text
    assert "API keys" not in page.text  # no admin menu for a reviewer
    stored = await User.select(User.last_login_at).first()
    assert stored is not None and stored["last_login_at"] is not None


async def test_the_cookie_is_secure_when_served_over_https(redis: object) -> None:
    app = create_app(dataclasses.replace(get_settings(), cookie_secure=True))
    await users.create_user("ana@example.com", PASSWORD, "admin", actor=Actor.system())
    async with serving(app), browser_for(app, "https") as browser:
        response = await sign_in(browser, "ana@example.com")
    cookie = next(c for c in response.headers.get_list("set-cookie") if "flowgate_session" in c)
    assert "Secure" in cookie


async def test_a_wrong_password_is_refused_without_saying_which_part_was_wrong(
    client: httpx.AsyncClient,
) -> None:
    await users.create_user("ana@example.com", PASSWORD, "reviewer", actor=Actor.system())
    for email, password in [("ana@example.com", "wrong password"), ("bob@example.com", PASSWORD)]:
        response = await post_form(
            client, "/dashboard/login", {"email": email, "password": password}
        )
        assert response.status_code == 400
        assert "Wrong email or password" in response.text
    assert (await client.get("/dashboard/executions")).status_code == 303


async def test_ten_failed_sign_ins_lock_the_email_for_15_minutes(
    client: httpx.AsyncClient,
) -> None:
    await users.create_user("ana@example.com", PASSWORD, "reviewer", actor=Actor.system())
    await users.create_user("bob@example.com", PASSWORD, "reviewer", actor=Actor.system())
    for _ in range(10):
        await post_form(client, "/dashboard/login", {"email": "ana@example.com", "password": "x"})

    locked = await post_form(
        client, "/dashboard/login", {"email": "ana@example.com", "password": PASSWORD}
    )

    assert locked.status_code == 429
    assert "Too many failed sign-ins for this email. Try again in 15 minutes" in locked.text
    other = await post_form(
        client, "/dashboard/login", {"email": "bob@example.com", "password": PASSWORD}
    )
    assert other.status_code == 303


async def test_signing_out_ends_the_session(reviewer_client: httpx.AsyncClient) -> None:
    assert (await reviewer_client.get("/dashboard/executions")).status_code == 200

    response = await post_form(reviewer_client, "/dashboard/logout")

    assert response.status_code == 303
    assert (await reviewer_client.get("/dashboard/executions")).status_code == 303


async def test_a_deactivated_user_is_signed_out_at_the_next_request(
    reviewer_client: httpx.AsyncClient,
) -> None:
    user = await User.select(User.id).where(User.email == "reviewer@example.com").first()
    assert user is not None
    await User.update({User.active: False}).where(User.id == user["id"])

    assert (await reviewer_client.get("/dashboard/executions")).status_code == 303


async def test_state_changing_requests_need_the_csrf_token(
    admin_client: httpx.AsyncClient,
) -> None:
    missing = await admin_client.post("/dashboard/logout")
    wrong = await admin_client.post("/dashboard/logout", data={"_csrf_token": "forged"})
    htmx_missing = await admin_client.post("/dashboard/logout", headers={"HX-Request": "true"})

    for response in (missing, wrong):
        assert response.status_code == 403
        assert "Your form expired or came from elsewhere" in response.text
    assert htmx_missing.status_code == 403
    assert htmx_missing.headers["HX-Retarget"] == "#flash"
    assert (await admin_client.get("/dashboard/executions")).status_code == 200  # still in
    token = await csrf_token(admin_client)
    ok = await admin_client.post("/dashboard/logout", headers={"x-csrftoken": token})
    assert ok.status_code == 303


async def test_the_next_parameter_only_leads_inside_the_dashboard(
    client: httpx.AsyncClient,
) -> None:
    await users.create_user("ana@example.com", PASSWORD, "reviewer", actor=Actor.system())
    response = await post_form(
        client,
        "/dashboard/login",
        {"email": "ana@example.com", "password": PASSWORD, "next": "https://evil.example/"},
    )
    assert response.headers["location"] == "/dashboard"
