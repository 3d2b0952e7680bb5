"""The /schema page works without internet: its viewer (Swagger UI) and every other file it
loads come from this server. /favicon.ico is an icon, not a 404."""

from __future__ import annotations

import re

import httpx

URL_ATTRIBUTE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


async def test_the_schema_page_loads_only_local_files_and_each_answers_200(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/schema")

    assert page.status_code == 200
    assert "SwaggerUIBundle" in page.text
    urls = URL_ATTRIBUTE.findall(page.text)
    assert len(urls) >= 4  # the icon, the stylesheet and two scripts
    assert not re.search(r"https?://|//[a-z]", page.text.split("<body", 1)[0])
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        answer = await client.get(url)
        assert answer.status_code == 200, url
        assert len(answer.content) > 0, url


async def test_the_viewer_files_are_the_vendored_package(client: httpx.AsyncClient) -> None:
    script = await client.get("/static/vendor/swagger-ui-dist-5.35.0/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "SwaggerUIBundle" in script.text


async def test_favicon_ico_is_an_image(client: httpx.AsyncClient) -> None:
    icon = await client.get("/favicon.ico")

    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/")
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    svg = await client.get("/static/favicon.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")


async def test_dashboard_pages_link_the_icon(client: httpx.AsyncClient) -> None:
    login = await client.get("/dashboard/login")
    assert '<link rel="icon" type="image/svg+xml" href="/static/favicon.svg">' in login.text
