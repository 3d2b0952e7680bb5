"""Bad input on the dashboard and its static files, through the real server (issue 12, item 9):
a 4xx in the page's own error shape, never a 500; and every 5xx logged with its traceback,
without the request's secrets."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, get

from tests import factories
from tests.api.test_rate_limits import PrivateRedis
from tests.live_server import LiveServer
from web.cli import SERVERS
from web.domain import users
from web.domain.actors import Actor

ROOT = Path(__file__).resolve().parents[2]
EXECUTIONS = "/dashboard/executions"
NOT_FOUND = {"message": "Not Found", "error": "Not Found", "statusCode": 404}


class SignedIn:
    def __init__(self, server: LiveServer, browser: httpx.AsyncClient) -> None:
        self.server = server
        self.browser = browser


@pytest.fixture
async def live_admin(db_pool: None) -> AsyncIterator[SignedIn]:
    """The real server (granian) and a browser signed in to it as an admin."""
    await users.create_user("admin@example.com", factories.PASSWORD, "admin", actor=Actor.system())
    server = LiveServer().start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as browser:
            await factories.sign_in(browser, "admin@example.com")
            yield SignedIn(server, browser)
    finally:
        server.stop()


@pytest.mark.parametrize("server_name", SERVERS)
async def test_static_paths_that_name_no_file_are_404_naming_no_path(
    db_pool: None, server_name: str
) -> None:
    server = LiveServer(server_name).start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            answers = {
                path: await http.get(path)
                for path in (
                    "/static/x%00",
                    "/static/app.css%00.png",
                    "/static/vendor/",
                    "/static/vendor",
                    "/static/",
                    "/static/%2e%2e/pyproject.toml",
                    "/static/..%2fpyproject.toml",
                    "/static/x%ff",
                    "/static/" + "a" * 300,  # longer than a file name may be
                    "/static/" + "a/" * 3000,  # longer than a path may be
                    "/static/missing.js",
                )
            }
            css = await http.get("/static/app.css")
    finally:
        server.stop()

    for path, answer in answers.items():
        assert (path, answer.status_code, answer.json()) == (path, 404, NOT_FOUND)
        assert str(ROOT) not in answer.text
    assert css.status_code == 200 and css.text == (ROOT / "static" / "app.css").read_text()


BAD_LIST_PARAMETERS = [
    ("older=abc", "older must be a link from this page"),
    ("newer=1_xyz", "newer must be a link from this page"),
    ("older=99999999999999999999_" + "0" * 32, "older must be a link from this page"),
    ("older=-99999999999999999_" + "0" * 32, "older must be a link from this page"),
    ("newer=1_" + "0" * 32 + "%00", "newer must be a link from this page"),
    ("created_to=10000-01-01", "To must be a date like 2025-10-23"),
    ("created_from=9999-12-32", "From must be a date like 2025-10-23"),
    ("created_from=0000-01-01", "From must be a date like 2025-10-23"),
    ("api_key=%00", "Unknown API key"),
    ("status=%00", "Text must not contain the NUL character"),
]


async def test_bad_list_parameters_are_a_400_page_not_a_500(live_admin: SignedIn) -> None:
    for query, message in BAD_LIST_PARAMETERS:
        page = await live_admin.browser.get(f"{EXECUTIONS}?{query}")
        partial = await live_admin.browser.get(
            f"{EXECUTIONS}?{query}",
            headers={"HX-Request": "true", "HX-Target": "executions-table"},
        )

        assert (query, page.status_code) == (query, 400)
        assert page.headers["content-type"].startswith("text/html")
        assert "<h1>400 · Bad Request</h1>" in page.text
        assert message in page.text
        # An HTMX request gets the message in the page's flash area instead.
        assert (query, partial.status_code) == (query, 400)
        assert partial.headers["HX-Retarget"] == "#flash"
        assert partial.text.startswith('<div class="flash error" role="alert">')
        assert message in partial.text


async def test_extreme_dates_and_positions_that_mean_something_are_answered(
    live_admin: SignedIn,
) -> None:
    secret = (await factories.create_key()).secret
    started = await live_admin.browser.post(
        "/api/v1/public/agents/workflow_bfsi_marketing_template/execute",
        json={"input": {"csvData": factories.rows(1)}},
        headers=factories.auth(secret),
    )
    execution_id = started.json()["executionId"]

    async def listed(query: str) -> tuple[int, bool]:
        answer = await live_admin.browser.get(f"{EXECUTIONS}?{query}")
        return answer.status_code, execution_id in answer.text

    # Up to the last day there is: everything so far; from it: nothing yet.
    assert await listed("created_to=9999-12-31") == (200, True)
    assert await listed("created_from=9999-12-31") == (200, False)
    assert await listed("created_from=0001-01-01") == (200, True)
    assert await listed("created_to=0001-01-01") == (200, False)
    assert await listed("created_from=0001-01-01&created_to=9999-12-31") == (200, True)
    # Newer than anything there is: the first page; older than anything there is: empty.
    assert await listed("newer=1_" + "0" * 32) == (200, True)
    assert await listed("newer=99999999999999999_" + "f" * 32) == (200, True)
    assert await listed("older=1_" + "0" * 32) == (200, False)
    assert await listed("older=99999999999999999_" + "f" * 32) == (200, True)


@get("/dashboard/test-failure", include_in_schema=False)
async def failing_page() -> None:
    raise RuntimeError("a bug in a page")


async def test_a_500_on_a_dashboard_page_is_logged_with_its_traceback_and_no_secrets(
    app: Litestar, admin_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    app.register(failing_page)
    caplog.set_level(logging.INFO)
    session = admin_client.cookies["flowgate_session"]
    csrf = await factories.csrf_token(admin_client)

    page = await admin_client.get(
        "/dashboard/test-failure?token=query-secret-1f2e", headers={"X-Api-Key": "header-secret"}
    )
    partial = await admin_client.get("/dashboard/test-failure", headers={"HX-Request": "true"})

    assert page.status_code == 500
    assert "<h1>500 · Internal Server Error</h1>" in page.text
    assert "Something went wrong on our side." in page.text
    assert "a bug in a page" not in page.text
    assert partial.status_code == 500
    assert "Something went wrong on our side." in partial.text
    records = [r for r in caplog.records if r.name == "flowgate.dashboard"]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("ERROR", "500 on GET /dashboard/test-failure"),
        ("ERROR", "500 on GET /dashboard/test-failure"),
    ]
    for record in records:
        assert record.exc_info is not None
        assert record.exc_info[0] is RuntimeError
    # What the app logged (the test's own HTTP client logs the URLs it asks for).
    server_side = [logging.Formatter().format(r) for r in caplog.records if r.name != "httpx"]
    for secret in ("query-secret-1f2e", "header-secret", session, csrf, factories.PASSWORD):
        assert all(secret not in text for text in server_side)


def _log_lines(stderr: bytes) -> list[dict[str, Any]]:
    lines = []
    for line in stderr.decode(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def test_redis_down_under_the_real_server_is_a_503_page_logged_with_its_traceback(
    db_pool: None,
) -> None:
    """A genuine 5xx: the sessions and the sign-in lockout live in Redis."""
    redis = PrivateRedis()
    redis.start()
    password = "correct-horse-battery-9d1c"
    await users.create_user("admin@example.com", password, "admin", actor=Actor.system())
    server = LiveServer(REDIS_URL=f"redis://127.0.0.1:{redis.port}/0").start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as browser:
            await factories.sign_in(browser, "admin@example.com", password)
            session = browser.cookies["flowgate_session"]
            csrf = await factories.csrf_token(browser)
            redis.stop()
            page = await browser.get(EXECUTIONS)
            sign_in = await factories.post_form(
                browser,
                "/dashboard/login",
                {"email": "admin@example.com", "password": password, "next": "/dashboard"},
            )
    finally:
        redis.stop()
        server.stop()
        assert server.process is None
    stderr = server.stderr

    assert page.status_code == 503
    assert "<h1>503 · Service Unavailable</h1>" in page.text
    assert "temporarily unavailable" in page.text
    assert sign_in.status_code == 503
    logged = [line for line in _log_lines(stderr) if line["logger"] == "flowgate.dashboard"]
    assert [line["message"] for line in logged] == [
        f"503 on GET {EXECUTIONS}",
        "503 on POST /dashboard/login",
    ]
    for line in logged:
        assert line["level"] == "warning"
        assert line["exception"].startswith("Traceback (most recent call last):")
        assert "redis.exceptions.ConnectionError" in line["exception"]
    for secret in (password, session, csrf):
        assert secret.encode() not in stderr
