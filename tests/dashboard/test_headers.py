"""Browser hardening headers on dashboard answers (web.dashboard.headers), none on the public
API, and templates the Content-Security-Policy does not have to make exceptions for."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import httpx

from tests.factories import PASSWORD, PUBLIC, auth, serving, sign_in
from web.app import create_app
from web.domain import users
from web.domain.actors import Actor
from web.settings import get_settings

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HARDENING = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def assert_hardened(response: httpx.Response) -> None:
    for name, value in HARDENING.items():
        assert response.headers.get(name) == value, (response.url, name)
    assert response.headers.get("cache-control") == "no-store", response.url


async def test_every_kind_of_dashboard_answer_carries_the_headers(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient
) -> None:
    answers = [
        await client.get("/dashboard/login"),  # anonymous page
        await client.get("/dashboard/executions"),  # the redirect to sign in
        await client.get("/dashboard/approvals", headers={"HX-Request": "true"}),
        await admin_client.get("/dashboard/executions"),  # a signed-in page
        await admin_client.get("/dashboard/executions", headers={"HX-Request": "true"}),
        await admin_client.get("/dashboard/keys/00000000-0000-0000-0000-000000000000"),  # 404
        await admin_client.get("/dashboard/no-such-page"),  # no route
        await admin_client.post("/dashboard/logout"),  # CSRF refusal (403)
    ]
    assert [answer.status_code for answer in answers] == [200, 303, 200, 200, 200, 404, 404, 403]
    for answer in answers:
        assert_hardened(answer)


async def test_the_public_api_and_health_answers_do_not_change(
    client: httpx.AsyncClient, api_key: str
) -> None:
    api = await client.get(
        f"{PUBLIC}/executions/00000000-0000-0000-0000-000000000000/status", headers=auth(api_key)
    )
    health = await client.get("/health")
    for answer in (api, health):
        for name in (*HARDENING, "cache-control"):
            assert name not in answer.headers, (answer.url, name)


async def test_the_csrf_cookie_is_secure_when_sessions_are(redis: object) -> None:
    app = create_app(dataclasses.replace(get_settings(), cookie_secure=True))
    await users.create_user("ana@example.com", PASSWORD, "admin", actor=Actor.system())
    async with (
        serving(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://testserver.local"
        ) as browser,
    ):
        login = await browser.get("/dashboard/login")
        signed_in = await sign_in(browser, "ana@example.com")
    cookies = [*login.headers.get_list("set-cookie"), *signed_in.headers.get_list("set-cookie")]
    csrf = [cookie for cookie in cookies if cookie.startswith("flowgate_csrf=")]
    session = [cookie for cookie in cookies if cookie.startswith("flowgate_session=")]
    assert len(csrf) == 2 and len(session) == 1  # anonymous token, then the session's
    for cookie in (*csrf, *session):
        assert "Secure" in cookie and "samesite=lax" in cookie.lower()
    assert "HttpOnly" in session[0]


def test_no_template_needs_unsafe_inline() -> None:
    """Inline <script>, <style>, style= and on…= handlers would be blocked by the CSP."""
    inline = re.compile(
        r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=|javascript:", re.IGNORECASE
    )
    found = [
        f"{path.relative_to(TEMPLATES)}: {match.group(0)}"
        for path in sorted(TEMPLATES.rglob("*.html"))
        for match in inline.finditer(path.read_text())
    ]
    assert found == []
