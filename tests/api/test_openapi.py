"""The OpenAPI document Litestar serves describes the six public endpoints as they really answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories import PUBLIC, auth, rows, start

OPENAPI_PATH = "/schema/openapi.json"
ERROR_KEYS = {"message", "error", "statusCode"}
EXECUTE_PATH = f"{PUBLIC}/agents/{{workflow_id}}/execute"
STATUS_PATH = f"{PUBLIC}/executions/{{execution_id}}/status"
RESULTS_PATH = f"{PUBLIC}/executions/{{execution_id}}/results"
PENDING_PATH = f"{PUBLIC}/executions/{{execution_id}}/pending-approval"
APPROVE_PATH = f"{PUBLIC}/executions/{{execution_id}}/approve"
REJECT_PATH = f"{PUBLIC}/executions/{{execution_id}}/reject"


async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get(OPENAPI_PATH)
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref into components.schemas; of a `oneOf [X, null]`, take X."""
    while True:
        if "$ref" in schema:
            name = schema["$ref"].removeprefix("#/components/schemas/")
            schema = document["components"]["schemas"][name]
        elif "oneOf" in schema:
            (schema,) = [s for s in schema["oneOf"] if s.get("type") != "null"]
        else:
            return schema


def response_schema(
    document: dict[str, Any], path: str, method: str, status: str
) -> dict[str, Any]:
    content = document["paths"][path][method]["responses"][status]["content"]
    return resolve(document, content["application/json"]["schema"])


def properties(document: dict[str, Any], schema: dict[str, Any], *names: str) -> set[str]:
    """The property names of `schema`, or of its nested property `names[0]`.`names[1]`…"""
    for name in names:
        schema = resolve(document, schema["properties"][name])
        if schema.get("type") == "array":
            schema = resolve(document, schema["items"])
    return set(schema["properties"])


async def live_bodies(client: httpx.AsyncClient, api_key: str, run_worker: Any) -> dict[str, Any]:
    """One real body of each endpoint's success answer, from a run taken to its end."""
    bodies: dict[str, Any] = {}
    headers = auth(api_key)
    data = rows(2)
    data[1]["phone"] = "12345"  # fails compliance: its result carries a "reason"
    executed = await client.post(
        f"{PUBLIC}/agents/workflow_bfsi_marketing_template/execute",
        json={"input": {"csvData": data}},
        headers=headers,
    )
    assert executed.status_code == 202
    bodies["execute"] = executed.json()
    execution_id = bodies["execute"]["executionId"]
    base = f"{PUBLIC}/executions/{execution_id}"
    await run_worker()
    for name, path in [("status", "status"), ("pending", "pending-approval")]:
        response = await client.get(f"{base}/{path}", headers=headers)
        assert response.status_code == 200
        bodies[name] = response.json()
    approved = await client.post(f"{base}/approve", json={"comment": "ok"}, headers=headers)
    assert approved.status_code == 200
    bodies["approve"] = approved.json()
    await run_worker()
    results = await client.get(f"{base}/results", headers=headers)
    assert results.status_code == 200
    bodies["results"] = results.json()

    rejected_id = await start(client, api_key)
    await run_worker()
    rejected = await client.post(
        f"{PUBLIC}/executions/{rejected_id}/reject", json={"comment": "no"}, headers=headers
    )
    assert rejected.status_code == 200
    bodies["reject"] = rejected.json()
    return bodies


async def test_the_openapi_document_is_served_as_json(client: httpx.AsyncClient) -> None:
    response = await client.get(OPENAPI_PATH)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.oai.openapi+json")
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "flowgate public API"


async def test_the_document_lists_exactly_the_six_public_endpoints_and_the_additions(
    client: httpx.AsyncClient,
) -> None:
    document = await openapi(client)

    assert {path: set(operations) for path, operations in document["paths"].items()} == {
        # Added beside the contract (README "Public API"):
        f"{PUBLIC}/executions": {"get"},
        f"{PUBLIC}/executions/{{execution_id}}/cancel": {"post"},
        f"{PUBLIC}/executions/{{execution_id}}/events": {"get"},
        EXECUTE_PATH: {"post"},
        STATUS_PATH: {"get"},
        RESULTS_PATH: {"get"},
        PENDING_PATH: {"get"},
        APPROVE_PATH: {"post"},
        REJECT_PATH: {"post"},
        # Meta's WhatsApp webhooks, at the server root (README "WhatsApp webhook").
        "/webhooks/whatsapp": {"get", "post"},
    }


async def test_documented_success_schemas_name_the_same_properties_as_the_live_answers(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    document = await openapi(client)
    live = await live_bodies(client, api_key, run_worker)

    execute = response_schema(document, EXECUTE_PATH, "post", "202")
    assert set(execute["properties"]) == set(live["execute"])
    status = response_schema(document, STATUS_PATH, "get", "200")
    assert set(status["properties"]) == set(live["status"])
    pending = response_schema(document, PENDING_PATH, "get", "200")
    assert set(pending["properties"]) == set(live["pending"])
    assert properties(document, pending, "approvalData") == set(live["pending"]["approvalData"])
    assert properties(document, pending, "approvalData", "metadata") == set(
        live["pending"]["approvalData"]["metadata"]
    )
    approve = response_schema(document, APPROVE_PATH, "post", "200")
    # Added beside the contract, only with more than one approver needed (not required).
    added = {"approvalStatus", "approvalsReceived", "approvalsRequired"}
    assert set(approve["properties"]) == set(live["approve"]) | added
    assert not added & set(approve.get("required", []))
    reject = response_schema(document, REJECT_PATH, "post", "200")
    assert set(reject["properties"]) == set(live["reject"])
    results = response_schema(document, RESULTS_PATH, "get", "200")
    # sendingResumesAt (added beside the contract) is there only while a send step waits for
    # its sending hours (tests/worker/test_sending_hours.py), so not in this completed run's.
    assert set(results["properties"]) == {*live["results"], "sendingResumesAt"}
    assert "sendingResumesAt" not in results.get("required", [])
    output = live["results"]["output"]
    # deliveryCounts (added beside the contract) only for whatsapp_cloud sends; this is sandbox.
    assert properties(document, results, "output") == set(output) | {"deliveryCounts"}
    # A result item always has customerId/status/messageId; "error" or "reason" only when set.
    item = resolve(document, resolve(document, results["properties"]["output"]))
    item = resolve(document, item["properties"]["results"]["items"])
    assert set(item["required"]) == {"customerId", "status", "messageId"}
    assert {key for result in output["results"] for key in result} <= set(item["properties"])
    assert [set(result) for result in output["results"]] == [
        {"customerId", "status", "messageId"},
        {"customerId", "status", "messageId", "reason"},
    ]


async def test_the_execute_request_body_is_documented_as_input_csv_data(
    client: httpx.AsyncClient,
) -> None:
    document = await openapi(client)

    body = document["paths"][EXECUTE_PATH]["post"]["requestBody"]
    assert body["required"] is True
    schema = resolve(document, body["content"]["application/json"]["schema"])
    assert set(schema["properties"]) == {"input", "description"}
    assert schema["required"] == ["input"]
    input_schema = resolve(document, schema["properties"]["input"])
    assert input_schema["required"] == ["csvData"]
    csv_data = input_schema["properties"]["csvData"]
    assert csv_data["type"] == "array"
    assert csv_data["items"]["type"] == "object"


@pytest.mark.parametrize("path", [APPROVE_PATH, REJECT_PATH], ids=["approve", "reject"])
async def test_the_decision_body_is_documented_as_optional(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, path: str
) -> None:
    execution_id = await start(client, api_key)
    await run_worker()
    live = await client.post(path.format(execution_id=execution_id), headers=auth(api_key))
    assert live.status_code == 200

    document = await openapi(client)

    assert document["paths"][path]["post"]["requestBody"].get("required", False) is False


async def test_documented_error_responses_have_the_live_error_shape(
    client: httpx.AsyncClient, api_key: str
) -> None:
    live = await client.post(
        f"{PUBLIC}/agents/workflow_bfsi_marketing_template/execute",
        json={"input": {"csvData": []}},
        headers=auth(api_key),
    )
    assert live.status_code == 400
    assert set(live.json()) == ERROR_KEYS

    document = await openapi(client)

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = resolve(document, response["content"]["application/json"]["schema"])
                    expected = ERROR_KEYS | ({"retryAfter"} if status == "429" else set())
                    assert set(schema["properties"]) == expected, (path, method, status)
