"""Every refusal of the public API: status, exact {message, error, statusCode} body, the order of
the checks, and that a refused request writes nothing (no execution, no row, no quota, no job)."""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from arq.connections import ArqRedis
from litestar import Litestar

from tests.factories import PUBLIC, auth, create_key, execute, execution_row, rows, start
from web.domain import clock
from web.domain.actors import Actor
from web.domain.api_keys import revoke_key
from web.domain.tables import ApiKeyUsage, Execution, ExecutionRow, SandboxMessage
from web.domain.workflows import BFSI_TEMPLATE, BFSI_WORKFLOW_ID, save_workflow, set_active

ERROR_KEYS = {"message", "error", "statusCode"}
INVALID_KEY = {"message": "Invalid API key", "error": "Unauthorized", "statusCode": 401}
EXECUTION_NOT_FOUND = {"message": "Execution not found", "error": "Not Found", "statusCode": 404}
WORKFLOW_NOT_FOUND = {"message": "Workflow not found", "error": "Not Found", "statusCode": 404}
OTHER_WORKFLOW_ID = "workflow_other_campaign"
# The six endpoints of public-api.md; {id} is an execution id.
EXECUTE = ("POST", f"/agents/{BFSI_WORKFLOW_ID}/execute")
EXECUTION_ENDPOINTS = [
    ("GET", "/executions/{id}/status"),
    ("GET", "/executions/{id}/results"),
    ("GET", "/executions/{id}/pending-approval"),
    ("POST", "/executions/{id}/approve"),
    ("POST", "/executions/{id}/reject"),
]
ENDPOINTS = [EXECUTE, *EXECUTION_ENDPOINTS]


def forbidden(message: str) -> dict[str, Any]:
    return {"message": message, "error": "Forbidden", "statusCode": 403}


def bad_request(message: str) -> dict[str, Any]:
    return {"message": message, "error": "Bad Request", "statusCode": 400}


def conflict(status: str) -> dict[str, Any]:
    return {
        "message": f"Execution is not pending approval (status: {status})",
        "error": "Conflict",
        "statusCode": 409,
    }


async def call(
    client: httpx.AsyncClient,
    endpoint: tuple[str, str],
    execution_id: str,
    headers: dict[str, str],
    **kwargs: Any,
) -> httpx.Response:
    """Call one endpoint; execute gets a valid one-row body unless told otherwise."""
    method, path = endpoint
    if endpoint == EXECUTE and "json" not in kwargs and "content" not in kwargs:
        kwargs["json"] = {"input": {"csvData": rows(1)}}
    return await client.request(
        method, PUBLIC + path.format(id=execution_id), headers=headers, **kwargs
    )


async def assert_nothing_written(redis: ArqRedis) -> None:
    assert await Execution.count() == 0
    assert await ExecutionRow.count() == 0
    assert await ApiKeyUsage.count() == 0
    assert await redis.zcard("arq:queue") == 0


async def snapshot(redis: ArqRedis) -> dict[str, Any]:
    """Everything a public request could change, but a key's last_used_at."""
    return {
        "executions": await Execution.select(
            Execution.id,
            Execution.status,
            Execution.approval_status,
            Execution.approval_comment,
            Execution.approval_decided_by,
            Execution.current_step,
            Execution.output,
            Execution.completed_at,
            Execution.updated_at,
        ).order_by(Execution.id),
        "rows": await ExecutionRow.select(
            ExecutionRow.id, ExecutionRow.decision, ExecutionRow.send_status, ExecutionRow.error
        ).order_by(ExecutionRow.id),
        "usage": await ApiKeyUsage.select(ApiKeyUsage.api_key, ApiKeyUsage.used).order_by(
            ApiKeyUsage.api_key
        ),
        "messages": await SandboxMessage.count(),
        "queue": sorted(await redis.zrange("arq:queue", 0, -1)),
    }


async def save_bfsi_copy(workflow_id: str, **approval_settings: Any) -> None:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = workflow_id
    definition["name"] = "Another campaign"
    for step in definition["steps"]:
        if step["type"] == "approval":
            step["settings"].update(approval_settings)
    await save_workflow(definition)


# --- 401 --------------------------------------------------------------------------------------

BAD_AUTHORIZATIONS: dict[str, Callable[[str], dict[str, str]]] = {
    "no Authorization header": lambda secret: {},
    "empty Authorization header": lambda secret: {"Authorization": ""},
    "Bearer without a value": lambda secret: {"Authorization": "Bearer"},
    "Bearer with a blank value": lambda secret: {"Authorization": "Bearer    "},
    "Basic scheme": lambda secret: {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
    "valid key under another scheme": lambda secret: {"Authorization": f"Token {secret}"},
    "valid key without a scheme": lambda secret: {"Authorization": secret},
    "malformed key": lambda secret: {"Authorization": "Bearer not-a-key"},
    "63 hex characters": lambda secret: {"Authorization": f"Bearer {secret[:63]}"},
    "65 hex characters": lambda secret: {"Authorization": f"Bearer {secret}0"},
    "64 characters, not hex": lambda secret: {"Authorization": "Bearer " + "g" * 64},
    "well-formed unknown key": lambda secret: {"Authorization": f"Bearer {secrets.token_hex(32)}"},
}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[f"{m} {p}" for m, p in ENDPOINTS])
@pytest.mark.parametrize("authorization", BAD_AUTHORIZATIONS.values(), ids=BAD_AUTHORIZATIONS)
async def test_a_missing_malformed_or_unknown_key_is_401_on_every_endpoint_and_changes_nothing(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    redis: ArqRedis,
    endpoint: tuple[str, str],
    authorization: Callable[[str], dict[str, str]],
) -> None:
    execution_id = await start(client, api_key)
    await run_worker()  # pending_approval: a wrongly accepted approve/reject would show
    before = await snapshot(redis)

    response = await call(client, endpoint, execution_id, authorization(api_key))

    assert response.status_code == 401
    assert response.json() == INVALID_KEY
    assert await snapshot(redis) == before


# --- 403: the key -----------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[f"{m} {p}" for m, p in ENDPOINTS])
async def test_a_revoked_key_is_403_inactive_on_every_endpoint_and_changes_nothing(
    client: httpx.AsyncClient, run_worker: Any, redis: ArqRedis, endpoint: tuple[str, str]
) -> None:
    key = await create_key()
    execution_id = await start(client, key.secret)
    await run_worker()
    await revoke_key(redis, key.id, actor=Actor.system())
    before = await snapshot(redis)

    response = await call(client, endpoint, execution_id, auth(key.secret))

    assert response.status_code == 403
    assert response.json() == forbidden("API key is inactive")
    assert await snapshot(redis) == before


async def test_a_key_created_already_expired_cannot_execute(
    client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    key = await create_key(expires_at=datetime.now(UTC) - timedelta(minutes=1))

    response = await execute(client, key.secret)

    assert response.status_code == 403
    assert response.json() == forbidden("API key has expired")
    await assert_nothing_written(redis)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[f"{m} {p}" for m, p in ENDPOINTS])
async def test_a_key_past_its_expiry_is_403_expired_on_every_endpoint_and_changes_nothing(
    client: httpx.AsyncClient, run_worker: Any, redis: ArqRedis, endpoint: tuple[str, str]
) -> None:
    key = await create_key(expires_at=datetime.now(UTC) + timedelta(hours=1))
    execution_id = await start(client, key.secret)
    await run_worker()
    clock.shift(timedelta(hours=2))
    before = await snapshot(redis)

    response = await call(client, endpoint, execution_id, auth(key.secret))

    assert response.status_code == 403
    assert response.json() == forbidden("API key has expired")
    assert await snapshot(redis) == before


# --- 403: the workflow and the quota ----------------------------------------------------------


async def test_an_inactive_workflow_is_403_and_nothing_is_written(
    client: httpx.AsyncClient, api_key: str, redis: ArqRedis
) -> None:
    await set_active(BFSI_WORKFLOW_ID, False, actor=Actor.system())

    response = await execute(client, api_key)

    assert response.status_code == 403
    assert response.json() == forbidden("Workflow is inactive")
    await assert_nothing_written(redis)


async def test_a_key_restricted_to_another_workflow_is_403_and_nothing_is_written(
    client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    await save_bfsi_copy(OTHER_WORKFLOW_ID)
    key = await create_key(allowed_workflows=[OTHER_WORKFLOW_ID])

    response = await execute(client, key.secret)

    assert response.status_code == 403
    assert response.json() == forbidden("Workflow is not allowed for this API key")
    await assert_nothing_written(redis)
    # The key itself works, on the workflow it is allowed.
    assert (await execute(client, key.secret, workflow_id=OTHER_WORKFLOW_ID)).status_code == 202


async def test_the_execution_past_the_monthly_limit_is_403_and_not_counted(
    client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    key = await create_key(monthly_limit=1)
    execution_id = await start(client, key.secret)
    before = await snapshot(redis)

    response = await execute(client, key.secret)

    assert response.status_code == 403
    assert response.json() == forbidden("API key usage limit exceeded")
    assert await snapshot(redis) == before
    assert [e["id"] for e in before["executions"]] == [UUID(execution_id)]
    assert await ApiKeyUsage.select(ApiKeyUsage.used).output(as_list=True) == [1]


async def test_a_key_with_a_monthly_limit_of_zero_cannot_execute_at_all(
    client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    key = await create_key(monthly_limit=0)

    response = await execute(client, key.secret)

    assert response.status_code == 403
    assert response.json() == forbidden("API key usage limit exceeded")
    await assert_nothing_written(redis)


# --- 404 --------------------------------------------------------------------------------------

EXECUTION_IDS: dict[str, Callable[[str], str]] = {
    "unknown uuid": lambda own: str(uuid4()),
    "not a uuid": lambda own: "not-a-uuid",
    "another key's execution": lambda own: own,
}


@pytest.mark.parametrize(
    "endpoint", EXECUTION_ENDPOINTS, ids=[f"{m} {p}" for m, p in EXECUTION_ENDPOINTS]
)
@pytest.mark.parametrize("target", EXECUTION_IDS.values(), ids=EXECUTION_IDS)
async def test_an_execution_that_is_not_the_keys_own_is_404_and_left_alone(
    client: httpx.AsyncClient,
    api_key: str,
    other_api_key: str,
    run_worker: Any,
    redis: ArqRedis,
    endpoint: tuple[str, str],
    target: Callable[[str], str],
) -> None:
    others = await start(client, other_api_key)
    await run_worker()
    before = await snapshot(redis)

    response = await call(client, endpoint, target(others), auth(api_key))

    assert response.status_code == 404
    assert response.json() == EXECUTION_NOT_FOUND
    assert await snapshot(redis) == before
    stored = await execution_row(others)
    assert (stored["status"], stored["approval_status"]) == ("pending_approval", "pending")


async def test_an_unknown_workflow_is_404_and_nothing_is_written(
    client: httpx.AsyncClient, api_key: str, redis: ArqRedis
) -> None:
    response = await execute(client, api_key, workflow_id="workflow_that_does_not_exist")

    assert response.status_code == 404
    assert response.json() == WORKFLOW_NOT_FOUND
    await assert_nothing_written(redis)


# --- 400 --------------------------------------------------------------------------------------


def _without_phone_at_3() -> list[dict[str, Any]]:
    data = rows(5)
    del data[3]["phone"]
    return data


def _empty_name_at_1() -> list[dict[str, Any]]:
    data = rows(2)
    data[1]["name"] = ""
    return data


JSON = {"Content-Type": "application/json"}
BAD_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "not JSON": (
        {"content": b'{"input":', "headers": JSON},
        "Request body is not valid JSON: it ends too early",
    ),
    "JSON syntax error": (
        {"content": b'{"input": }', "headers": JSON},
        "Request body is not valid JSON: invalid character (byte 10)",
    ),
    "a JSON array": ({"json": [rows(1)]}, "body: Expected `object`, got `array`"),
    "a JSON string": ({"json": "hello"}, "body: Expected `object`, got `str`"),
    "no input": ({"json": {}}, "body: Object missing required field `input`"),
    "input null": ({"json": {"input": None}}, "input: Expected `object`, got `null`"),
    "no csvData": ({"json": {"input": {}}}, "input: Object missing required field `csvData`"),
    "csvData a string": (
        {"json": {"input": {"csvData": "x"}}},
        "input.csvData: Expected `array`, got `str`",
    ),
    "csvData of numbers": (
        {"json": {"input": {"csvData": [1]}}},
        "input.csvData[0]: Expected `object`, got `int`",
    ),
    "row 3 of 5 without phone": (
        {"json": {"input": {"csvData": _without_phone_at_3()}}},
        "input.csvData[3].phone is required",
    ),
    "a row with an empty name": (
        {"json": {"input": {"csvData": _empty_name_at_1()}}},
        "input.csvData[1].name is required",
    ),
    "a row with a blank name": (
        {"json": {"input": {"csvData": rows(1, name="   ")}}},
        "input.csvData[0].name is required",
    ),
    "a row with a null customerId": (
        {"json": {"input": {"csvData": rows(1, customerId=None)}}},
        "input.csvData[0].customerId is required",
    ),
    "empty csvData": (
        {"json": {"input": {"csvData": []}}},
        "input.csvData must contain at least one row",
    ),
    "description not a string": (
        {"json": {"input": {"csvData": rows(1)}, "description": 5}},
        "description: Expected `str | null`, got `int`",
    ),
    "empty body": ({"content": b""}, "Request body is required"),
    "empty JSON body": ({"content": b"", "headers": JSON}, "Request body is required"),
}


@pytest.mark.parametrize(("request_kwargs", "message"), BAD_BODIES.values(), ids=BAD_BODIES)
async def test_an_invalid_execute_body_is_400_naming_the_problem_and_nothing_is_written(
    client: httpx.AsyncClient,
    api_key: str,
    redis: ArqRedis,
    request_kwargs: dict[str, Any],
    message: str,
) -> None:
    kwargs = copy.deepcopy(request_kwargs)
    headers = {**auth(api_key), **kwargs.pop("headers", {})}

    response = await call(client, EXECUTE, "", headers, **kwargs)

    assert response.status_code == 400
    assert response.json() == bad_request(message)
    await assert_nothing_written(redis)


def _nul_in_value() -> dict[str, Any]:
    return {"input": {"csvData": rows(1, city="Mum\u0000bai")}}


def _nul_in_key() -> dict[str, Any]:
    row = rows(1)[0]
    row["note\u0000"] = "x"
    return {"input": {"csvData": [row]}}


def _nul_in_description() -> dict[str, Any]:
    return {"input": {"csvData": rows(1)}, "description": "Octo\u0000ber"}


UNSTORABLE_BODIES = {
    "NUL in a csvData value": (_nul_in_value, "input.csvData[0].city"),
    "NUL in a csvData key": (_nul_in_key, "input.csvData[0]"),
    "NUL in the description": (_nul_in_description, "description"),
}


@pytest.mark.parametrize(("body", "where"), UNSTORABLE_BODIES.values(), ids=UNSTORABLE_BODIES)
async def test_a_nul_character_in_the_body_is_a_400_not_a_500(
    client: httpx.AsyncClient,
    api_key: str,
    redis: ArqRedis,
    body: Callable[[], dict[str, Any]],
    where: str,
) -> None:
    response = await call(client, EXECUTE, "", auth(api_key), json=body())

    assert response.status_code == 400
    assert response.json() == bad_request(f"{where} contains a NUL character (\\u0000)")
    await assert_nothing_written(redis)


async def test_the_text_backslash_u0000_is_not_a_nul_and_is_stored_as_sent(
    client: httpx.AsyncClient, api_key: str
) -> None:
    city = "C:\\u0000 street"  # a backslash, then "u0000": six ordinary characters
    response = await call(
        client, EXECUTE, "", auth(api_key), json={"input": {"csvData": rows(1, city=city)}}
    )

    assert response.status_code == 202
    stored = (
        await ExecutionRow.select(ExecutionRow.data)
        .where(ExecutionRow.execution == response.json()["executionId"])
        .output(load_json=True)
    )
    assert [row["data"]["city"] for row in stored] == [city]


async def test_deeply_nested_json_is_a_400_not_a_500(
    client: httpx.AsyncClient, api_key: str, redis: ArqRedis
) -> None:
    depth = 2_000
    body = (
        b'{"input": {"csvData": [{"customerId": "C1", "name": "A", "phone": "+918610560986", '
        b'"nested": ' + b"[" * depth + b"]" * depth + b"}]}}"
    )

    response = await call(client, EXECUTE, "", {**auth(api_key), **JSON}, content=body)

    assert response.status_code == 400
    assert set(response.json()) == ERROR_KEYS
    assert response.json()["error"] == "Bad Request"
    await assert_nothing_written(redis)


async def test_a_nul_character_in_the_workflow_id_is_404_not_a_500(
    client: httpx.AsyncClient, api_key: str, redis: ArqRedis
) -> None:
    response = await client.post(
        f"{PUBLIC}/agents/workflow%00/execute",
        json={"input": {"csvData": rows(1)}},
        headers=auth(api_key),
    )

    assert response.status_code == 404
    assert response.json() == WORKFLOW_NOT_FOUND
    await assert_nothing_written(redis)


@pytest.mark.parametrize("action", ["approve", "reject"])
@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({"json": [1]}, "body: Expected `object | null`, got `array`"),
        ({"json": {"comment": 5}}, "comment: Expected `str | null`, got `int`"),
        (
            {"content": b'{"comment": ', "headers": JSON},
            "Request body is not valid JSON: it ends too early",
        ),
    ],
    ids=["array", "comment not a string", "not JSON"],
)
async def test_an_invalid_decision_body_is_400_and_the_execution_is_unchanged(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    redis: ArqRedis,
    action: str,
    request_kwargs: dict[str, Any],
    message: str,
) -> None:
    execution_id = await start(client, api_key)
    await run_worker()
    before = await snapshot(redis)
    kwargs = copy.deepcopy(request_kwargs)
    headers = {**auth(api_key), **kwargs.pop("headers", {})}

    response = await client.post(
        f"{PUBLIC}/executions/{execution_id}/{action}", headers=headers, **kwargs
    )

    assert response.status_code == 400
    assert response.json() == bad_request(message)
    assert await snapshot(redis) == before


@pytest.mark.parametrize("action", ["approve", "reject"])
@pytest.mark.parametrize("body", [None, {}, {"comment": None}, {"comment": "   "}])
async def test_a_decision_without_a_comment_is_400_when_the_workflow_requires_one(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    redis: ArqRedis,
    action: str,
    body: dict[str, Any] | None,
) -> None:
    await save_bfsi_copy(OTHER_WORKFLOW_ID, requireComment=True)
    execution_id = await start(client, api_key, workflow_id=OTHER_WORKFLOW_ID)
    await run_worker()
    before = await snapshot(redis)

    response = await client.post(
        f"{PUBLIC}/executions/{execution_id}/{action}", json=body, headers=auth(api_key)
    )

    assert response.status_code == 400
    assert response.json() == bad_request("A comment is required for this approval")
    assert await snapshot(redis) == before


# --- 413 --------------------------------------------------------------------------------------


async def test_a_body_over_1_mib_is_413_and_nothing_is_written(
    client: httpx.AsyncClient, api_key: str, redis: ArqRedis
) -> None:
    data = rows(1, note="x" * 1000) * 1100  # about 1.3 MB of JSON
    response = await execute(client, api_key, data)

    assert response.status_code == 413
    assert response.json() == {
        "message": "Request body is too large",
        "error": HTTPStatus(413).phrase,
        "statusCode": 413,
    }
    await assert_nothing_written(redis)


# --- 409 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["approve", "reject"])
async def test_a_decision_on_an_execution_not_yet_run_is_409_and_changes_nothing(
    client: httpx.AsyncClient, api_key: str, redis: ArqRedis, action: str
) -> None:
    execution_id = await start(client, api_key)
    before = await snapshot(redis)

    response = await client.post(
        f"{PUBLIC}/executions/{execution_id}/{action}",
        json={"comment": "too early"},
        headers=auth(api_key),
    )

    assert response.status_code == 409
    assert response.json() == conflict("pending")
    assert await snapshot(redis) == before
    stored = await execution_row(execution_id)
    assert (stored["status"], stored["approval_comment"]) == ("pending", None)


@pytest.mark.parametrize("action", ["approve", "reject"])
async def test_a_decision_on_a_completed_execution_is_409_and_changes_nothing(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, redis: ArqRedis, action: str
) -> None:
    execution_id = await start(client, api_key)
    await run_worker()
    approved = await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve",
        json={"comment": "first"},
        headers=auth(api_key),
    )
    assert approved.status_code == 200
    await run_worker()
    before = await snapshot(redis)

    response = await client.post(
        f"{PUBLIC}/executions/{execution_id}/{action}",
        json={"comment": "second"},
        headers=auth(api_key),
    )

    assert response.status_code == 409
    assert response.json() == conflict("completed")
    assert await snapshot(redis) == before
    stored = await execution_row(execution_id)
    assert (stored["status"], stored["approval_status"], stored["approval_comment"]) == (
        "completed",
        "approved",
        "first",
    )


@pytest.mark.parametrize("action", ["approve", "reject"])
async def test_a_decision_on_a_rejected_execution_is_409_and_changes_nothing(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, redis: ArqRedis, action: str
) -> None:
    execution_id = await start(client, api_key)
    await run_worker()
    rejected = await client.post(
        f"{PUBLIC}/executions/{execution_id}/reject", json={"comment": "no"}, headers=auth(api_key)
    )
    assert rejected.status_code == 200
    before = await snapshot(redis)

    response = await client.post(
        f"{PUBLIC}/executions/{execution_id}/{action}",
        json={"comment": "changed my mind"},
        headers=auth(api_key),
    )

    assert response.status_code == 409
    assert response.json() == conflict("cancelled")
    assert await snapshot(redis) == before
    stored = await execution_row(execution_id)
    assert (stored["status"], stored["approval_status"], stored["approval_comment"]) == (
        "cancelled",
        "rejected",
        "no",
    )


async def test_pending_approval_data_of_an_execution_not_yet_run_is_409(
    client: httpx.AsyncClient, api_key: str
) -> None:
    execution_id = await start(client, api_key)

    response = await client.get(
        f"{PUBLIC}/executions/{execution_id}/pending-approval", headers=auth(api_key)
    )

    assert response.status_code == 409
    assert response.json() == conflict("pending")


async def test_pending_approval_data_of_a_completed_execution_is_409(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    execution_id = await start(client, api_key)
    await run_worker()
    await client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key))
    await run_worker()

    response = await client.get(
        f"{PUBLIC}/executions/{execution_id}/pending-approval", headers=auth(api_key)
    )

    assert response.status_code == 409
    assert response.json() == conflict("completed")


# --- order of the checks ----------------------------------------------------------------------


async def test_the_workflow_is_checked_before_the_body(
    client: httpx.AsyncClient, api_key: str, redis: ArqRedis
) -> None:
    response = await call(
        client,
        ("POST", "/agents/workflow_that_does_not_exist/execute"),
        "",
        {**auth(api_key), **JSON},
        content=b"[not json",
    )

    assert response.status_code == 404
    assert response.json() == WORKFLOW_NOT_FOUND
    await assert_nothing_written(redis)


async def test_an_inactive_workflow_is_refused_before_the_body_is_read(
    client: httpx.AsyncClient, api_key: str, redis: ArqRedis
) -> None:
    await set_active(BFSI_WORKFLOW_ID, False, actor=Actor.system())

    response = await call(client, EXECUTE, "", auth(api_key), json={"input": {"csvData": []}})

    assert response.status_code == 403
    assert response.json() == forbidden("Workflow is inactive")
    await assert_nothing_written(redis)


async def test_the_key_is_checked_before_the_workflow(
    client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    key = await create_key()
    await revoke_key(redis, key.id, actor=Actor.system())

    revoked = await execute(client, key.secret, workflow_id="workflow_that_does_not_exist")
    unknown = await execute(
        client, secrets.token_hex(32), workflow_id="workflow_that_does_not_exist"
    )

    assert revoked.status_code == 403
    assert revoked.json() == forbidden("API key is inactive")
    assert unknown.status_code == 401
    assert unknown.json() == INVALID_KEY
    await assert_nothing_written(redis)


async def test_the_body_is_checked_before_the_quota(
    client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    key = await create_key(monthly_limit=0)

    response = await execute(client, key.secret, [])

    assert response.status_code == 400
    assert response.json() == bad_request("input.csvData must contain at least one row")
    await assert_nothing_written(redis)


async def test_the_key_is_checked_before_the_execution_is_looked_up(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        f"{PUBLIC}/executions/not-a-uuid/status",
        headers={"Authorization": f"Bearer {secrets.token_hex(32)}"},
    )

    assert response.status_code == 401
    assert response.json() == INVALID_KEY


# --- the error shape everywhere ---------------------------------------------------------------


def _concrete(path: str) -> str:
    values = {"execution_id": str(uuid4()), "workflow_id": BFSI_WORKFLOW_ID}
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values[m.group(1)], path)


async def test_every_public_route_and_method_answers_a_keyless_call_in_the_error_shape(
    client: httpx.AsyncClient, app: Litestar
) -> None:
    called = set()
    for route in app.routes:
        if not route.path.startswith(PUBLIC):
            continue
        for method in sorted(route.methods):
            response = await client.request(method, _concrete(route.path))

            assert response.headers["content-type"] == "application/json", (method, route.path)
            body = response.json()
            assert set(body) == ERROR_KEYS, (method, route.path, body)
            assert body["statusCode"] == response.status_code
            assert body["error"] == HTTPStatus(response.status_code).phrase
            if method != "OPTIONS":
                assert body == INVALID_KEY, (method, route.path)
            called.add((method, route.path))
    assert {(m, p) for m, p in called if m != "OPTIONS"} == {
        ("GET", f"{PUBLIC}/executions"),  # added beside the contract
        ("POST", f"{PUBLIC}/executions/{{execution_id:str}}/cancel"),  # added beside it too
        ("GET", f"{PUBLIC}/executions/{{execution_id:str}}/events"),  # and this
        ("POST", f"{PUBLIC}/agents/{{workflow_id:str}}/execute"),
        ("GET", f"{PUBLIC}/executions/{{execution_id:str}}/status"),
        ("GET", f"{PUBLIC}/executions/{{execution_id:str}}/results"),
        ("GET", f"{PUBLIC}/executions/{{execution_id:str}}/pending-approval"),
        ("POST", f"{PUBLIC}/executions/{{execution_id:str}}/approve"),
        ("POST", f"{PUBLIC}/executions/{{execution_id:str}}/reject"),
    }


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/execution",
        f"/executions/{uuid4()}",
        f"/executions/{uuid4()}/unknown",
        "/agents/workflow_bfsi_marketing_template",
    ],
)
async def test_an_unknown_public_path_is_404_in_the_error_shape(
    client: httpx.AsyncClient, api_key: str, path: str
) -> None:
    response = await client.get(PUBLIC + path, headers=auth(api_key))

    assert response.status_code == 404
    assert response.json() == {"message": "Not Found", "error": "Not Found", "statusCode": 404}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/executions/{id}/status"),
        ("POST", "/executions/{id}/results"),
        ("PUT", "/executions/{id}/approve"),
        ("GET", "/executions/{id}/reject"),
        ("GET", f"/agents/{BFSI_WORKFLOW_ID}/execute"),
    ],
)
async def test_a_wrong_method_is_405_in_the_error_shape(
    client: httpx.AsyncClient, api_key: str, method: str, path: str
) -> None:
    execution_id = await start(client, api_key)

    response = await client.request(
        method, PUBLIC + path.format(id=execution_id), headers=auth(api_key)
    )

    assert response.status_code == 405
    assert response.json() == {
        "message": "Method Not Allowed",
        "error": "Method Not Allowed",
        "statusCode": 405,
    }
    assert (await execution_row(execution_id))["status"] == "pending"
