"""GET /executions/:id/events: Server-Sent Events of an execution's status, through real web
processes (a stream lives in one process, the change is made in another or by the worker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.factories import PUBLIC, auth, rows, start
from tests.live_server import LiveServer

SSE = {"Accept": "text/event-stream"}


@pytest.fixture
def servers(db_pool: None) -> Iterator[list[LiveServer]]:
    started = [LiveServer(FLOWGATE_SSE_KEEP_ALIVE_SECONDS="0.5").start() for _ in range(2)]
    yield started
    for server in started:
        server.stop()


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Each event (or keep-alive comment) of an SSE answer as it arrives."""
    event: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line == "":
            if event:
                yield event
            event = {}
        else:
            name, _, value = line.partition(": ")
            event[name] = json.loads(value) if name == "data" else value


async def next_event(stream: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    while True:
        event = await asyncio.wait_for(anext(stream), 30)
        if "comment" not in event:
            return event


async def test_a_stream_follows_the_run_to_its_end_across_processes(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, servers: list[LiveServer]
) -> None:
    streaming, other = servers
    execution_id = await start(client, api_key, csv_data=rows(2))
    url = f"{PUBLIC}/executions/{execution_id}/events"
    async with (
        httpx.AsyncClient(base_url=streaming.url, timeout=30) as http,
        http.stream("GET", url, headers={**auth(api_key), **SSE}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "x-ratelimit-remaining" in response.headers
        stream = events(response)
        first = await next_event(stream)
        assert first["event"] == "status"
        assert first["data"]["status"] == "pending"

        await run_worker()
        seen = [await next_event(stream), await next_event(stream)]
        assert [e["data"]["status"] for e in seen] == ["running", "pending_approval"]
        async with httpx.AsyncClient(base_url=other.url) as elsewhere:  # another web process
            approved = await elsewhere.post(
                f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key)
            )
        assert approved.status_code == 200
        assert (await next_event(stream))["data"]["status"] == "running"
        await run_worker()
        last = await next_event(stream)
        rest = [event async for event in stream]  # the stream ends after a final status

    status = (
        await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(api_key))
    ).json()
    assert last["data"] == status and status["status"] == "completed"
    assert [e for e in rest if "comment" not in e] == []
    ids = [int(e["id"]) for e in [first, *seen, last]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_a_reconnect_gets_only_what_came_after_its_last_event_id(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, servers: list[LiveServer]
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(1))
    await run_worker()
    await client.post(f"{PUBLIC}/executions/{execution_id}/reject", headers=auth(api_key))
    url = f"{servers[0].url}{PUBLIC}/executions/{execution_id}/events"

    async with httpx.AsyncClient(timeout=30) as http:
        whole = [e async for e in events(await _get(http, url, api_key))]
        final_id = whole[-1]["id"]
        after_final = [e async for e in events(await _get(http, url, api_key, final_id))]
        before_final = [
            e async for e in events(await _get(http, url, api_key, str(int(final_id) - 1)))
        ]

    assert [e["data"]["status"] for e in whole] == ["cancelled"]
    assert after_final == []
    assert [(e["id"], e["data"]["status"]) for e in before_final] == [(final_id, "cancelled")]


async def _get(
    http: httpx.AsyncClient, url: str, api_key: str, last_id: str | None = None
) -> httpx.Response:
    headers = {**auth(api_key), **SSE, **({"Last-Event-ID": last_id} if last_id else {})}
    response = await http.send(http.build_request("GET", url, headers=headers), stream=True)
    assert response.status_code == 200
    return response


async def test_a_quiet_stream_sends_keep_alive_comments(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, servers: list[LiveServer]
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(1))
    await run_worker()  # waiting for approval: nothing changes
    url = f"{servers[0].url}{PUBLIC}/executions/{execution_id}/events"
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("GET", url, headers={**auth(api_key), **SSE}) as response,
    ):
        stream = events(response)
        assert (await anext(stream))["data"]["status"] == "pending_approval"
        assert await asyncio.wait_for(anext(stream), 10) == {"comment": "keep-alive"}


async def test_another_accept_is_406_and_another_keys_execution_404(
    client: httpx.AsyncClient, api_key: str, other_api_key: str, servers: list[LiveServer]
) -> None:
    execution_id = await start(client, api_key)
    url = f"{servers[0].url}{PUBLIC}/executions/{execution_id}/events"
    async with httpx.AsyncClient(timeout=10) as http:
        json_please = await http.get(url, headers={**auth(api_key), "Accept": "application/json"})
        theirs = await http.get(url, headers={**auth(other_api_key), **SSE})

    assert json_please.status_code == 406
    assert json_please.json() == {
        "message": "This endpoint answers text/event-stream only: send that Accept",
        "error": "Not Acceptable",
        "statusCode": 406,
    }
    assert "x-ratelimit-remaining" in json_please.headers
    assert theirs.status_code == 404
    assert theirs.json()["message"] == "Execution not found"
