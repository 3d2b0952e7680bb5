"""GET /executions: the calling key's executions, newest first, filtered, paged by an opaque
cursor that stays stable while new executions arrive."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories import PUBLIC, auth, rows, start

LIST = f"{PUBLIC}/executions"


async def listing(
    client: httpx.AsyncClient, secret: str, params: Any = None, status_code: int = 200
) -> dict[str, Any]:
    response = await client.get(LIST, params=params, headers=auth(secret))
    assert response.status_code == status_code, response.text
    assert "x-ratelimit-remaining" in response.headers
    body: dict[str, Any] = response.json()
    return body


async def test_the_list_is_the_keys_own_executions_newest_first(
    client: httpx.AsyncClient, api_key: str, other_api_key: str
) -> None:
    first = await start(client, api_key, description="October campaign")
    second = await start(client, api_key)
    await start(client, other_api_key)
    statuses = {
        execution_id: (
            await client.get(f"{LIST}/{execution_id}/status", headers=auth(api_key))
        ).json()
        for execution_id in (first, second)
    }

    body = await listing(client, api_key)

    assert body == {
        "data": [
            {
                "id": execution_id,
                "workflowId": "workflow_bfsi_marketing_template",
                "status": "pending",
                "approvalStatus": None,
                "startedAt": statuses[execution_id]["startedAt"],
                "completedAt": None,
                "description": description,
            }
            for execution_id, description in ((second, None), (first, "October campaign"))
        ],
        "nextCursor": None,
    }


async def test_pages_follow_the_cursor_and_new_executions_do_not_shift_them(
    client: httpx.AsyncClient, api_key: str
) -> None:
    started = [await start(client, api_key, csv_data=rows(1)) for _ in range(5)]
    newest_first = started[::-1]

    page1 = await listing(client, api_key, {"limit": "2"})
    await start(client, api_key, csv_data=rows(1))  # arrives between pages
    page2 = await listing(client, api_key, {"limit": "2", "cursor": page1["nextCursor"]})
    page3 = await listing(client, api_key, {"limit": "2", "cursor": page2["nextCursor"]})

    assert [e["id"] for e in page1["data"]] == newest_first[:2]
    assert [e["id"] for e in page2["data"]] == newest_first[2:4]
    assert [e["id"] for e in page3["data"]] == newest_first[4:]
    assert page3["nextCursor"] is None
    assert isinstance(page1["nextCursor"], str) and isinstance(page2["nextCursor"], str)
    # The page size may change between pages; the filters may not.
    rest = await listing(client, api_key, {"limit": "100", "cursor": page1["nextCursor"]})
    assert [e["id"] for e in rest["data"]] == newest_first[2:]


async def test_a_full_last_page_has_no_next_cursor(client: httpx.AsyncClient, api_key: str) -> None:
    for _ in range(2):
        await start(client, api_key, csv_data=rows(1))
    assert (await listing(client, api_key, {"limit": "2"}))["nextCursor"] is None
    assert len((await listing(client, api_key, {"limit": "1"}))["data"]) == 1


async def test_status_may_repeat_and_workflow_filters(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    waiting = await start(client, api_key)
    await run_worker()
    rejected = await start(client, api_key)
    await run_worker()
    await client.post(f"{LIST}/{rejected}/reject", headers=auth(api_key))
    pending = await start(client, api_key)

    waiting_only = await listing(client, api_key, {"status": "pending_approval"})
    assert [e["id"] for e in waiting_only["data"]] == [waiting]
    assert waiting_only["data"][0]["approvalStatus"] == "pending"
    both = await listing(client, api_key, [("status", "pending"), ("status", "cancelled")])
    assert [(e["id"], e["status"]) for e in both["data"]] == [
        (pending, "pending"),
        (rejected, "cancelled"),
    ]
    assert both["data"][1]["approvalStatus"] == "rejected"
    assert both["data"][1]["completedAt"] is not None
    by_workflow = await listing(client, api_key, {"workflowId": "workflow_bfsi_marketing_template"})
    assert len(by_workflow["data"]) == 3
    assert await listing(client, api_key, {"workflowId": "no_such_workflow"}) == {
        "data": [],
        "nextCursor": None,
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit must be a whole number from 1 to 100; got '0'"),
        ({"limit": "101"}, "limit must be a whole number from 1 to 100; got '101'"),
        ({"limit": "ten"}, "limit must be a whole number from 1 to 100; got 'ten'"),
        (
            {"status": "done"},
            "status must be one of pending, running, pending_approval, completed, failed, "
            "cancelled; got 'done'",
        ),
        ({"cursor": "not-a-cursor"}, "cursor is not a cursor this API returned"),
        ({"cursor": "W10"}, "cursor is not a cursor this API returned"),
    ],
)
async def test_bad_values_are_400_naming_them(
    client: httpx.AsyncClient, api_key: str, params: dict[str, str], message: str
) -> None:
    body = await listing(client, api_key, params, status_code=400)
    assert body == {"message": message, "error": "Bad Request", "statusCode": 400}


async def test_a_cursor_sent_with_other_filters_is_refused(
    client: httpx.AsyncClient, api_key: str
) -> None:
    for _ in range(3):
        await start(client, api_key, csv_data=rows(1))
    cursor = (await listing(client, api_key, {"limit": "1", "status": "pending"}))["nextCursor"]

    same = await listing(client, api_key, {"limit": "1", "status": "pending", "cursor": cursor})
    other = await listing(client, api_key, {"cursor": cursor}, status_code=400)

    assert len(same["data"]) == 1
    assert other["message"] == (
        "cursor belongs to other filters: send it with the status and workflowId of the "
        "request that returned it"
    )


async def test_without_a_key_the_list_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(LIST)
    assert response.status_code == 401
    assert response.json()["statusCode"] == 401


async def test_the_schema_documents_the_list(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    operation = schema["paths"][LIST]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) == {"status", "workflowId", "limit", "cursor"}
    assert params["limit"]["schema"]["maximum"] == 100
    assert "pending_approval" in params["status"]["schema"]["items"]["enum"]
    assert {"200", "400", "401", "429"} <= set(operation["responses"])
