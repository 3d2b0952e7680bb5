"""Every dashboard answer says `Vary: HX-Request`: the same URL is a full page or, to HTMX, a
partial (the executions list pushes its filtered URL into the history), and a cache must not
serve one for the other."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import rows, start

HTMX = {"HX-Request": "true", "HX-Target": "executions-table"}


def varies_on_htmx(response: httpx.Response) -> bool:
    return "hx-request" in {v.strip().lower() for v in response.headers.get("vary", "").split(",")}


async def test_the_executions_list_full_page_and_partial_vary_on_hx_request(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    await start(client, api_key, csv_data=rows(1))

    page = await admin_client.get("/dashboard/executions?status=pending")
    partial = await admin_client.get("/dashboard/executions?status=pending", headers=HTMX)

    assert page.status_code == partial.status_code == 200
    assert "<html" in page.text and "<html" not in partial.text
    assert varies_on_htmx(page)
    assert varies_on_htmx(partial)


async def test_redirects_and_error_pages_of_the_dashboard_vary_too(
    client: httpx.AsyncClient, admin_client: httpx.AsyncClient
) -> None:
    login = await client.get("/dashboard/executions")  # signed out: to the sign-in page
    htmx_login = await client.get("/dashboard/executions", headers=HTMX)
    missing = await admin_client.get("/dashboard/executions/00000000-0000-0000-0000-000000000000")
    bad = await admin_client.get("/dashboard/executions?created_from=x", headers=HTMX)

    assert login.status_code == 303 and varies_on_htmx(login)
    assert "HX-Redirect" in htmx_login.headers and varies_on_htmx(htmx_login)
    assert missing.status_code == 404 and varies_on_htmx(missing)
    assert bad.status_code == 400 and varies_on_htmx(bad)


async def test_an_existing_vary_is_kept() -> None:
    from litestar import Response

    from web.dashboard.vary import vary_on_htmx

    response = vary_on_htmx(Response(content="", headers={"Vary": "Accept-Encoding"}))
    assert response.headers["Vary"] == "Accept-Encoding, HX-Request"
    assert vary_on_htmx(response).headers["Vary"] == "Accept-Encoding, HX-Request"


async def test_the_public_api_does_not_vary_on_hx_request(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/v1/public/executions/x/status")
    assert not varies_on_htmx(answer)
