"""Hand-written bad input for execute (issue 7, "Bad input"): each gets a clear 4xx in the
error shape, or is accepted the way the README says."""

from __future__ import annotations

import json

import httpx

from tests.factories import PUBLIC, auth, execute, execution_row, row_states, rows
from web.domain.tables import Execution

EXECUTE = f"{PUBLIC}/agents/workflow_bfsi_marketing_template/execute"
JSON = {"Content-Type": "application/json"}


async def test_invalid_utf8_is_a_400(client: httpx.AsyncClient, api_key: str) -> None:
    body = b'{"input": {"csvData": [{"customerId": "\xff\xfe", "name": "A", "phone": "+1"}]}}'
    response = await client.post(EXECUTE, content=body, headers={**auth(api_key), **JSON})
    assert response.status_code == 400
    assert set(response.json()) == {"message", "error", "statusCode"}
    assert response.json()["message"].startswith("Request body is not valid JSON")
    assert await Execution.count() == 0


async def test_null_rows_are_a_400_naming_the_row(client: httpx.AsyncClient, api_key: str) -> None:
    response = await execute(client, api_key, [rows(1)[0], None])  # type: ignore[list-item]
    assert response.status_code == 400
    assert response.json() == {
        "message": "input.csvData[1]: Expected `object`, got `null`",
        "error": "Bad Request",
        "statusCode": 400,
    }


async def test_10000_rows_are_cut_to_100(client: httpx.AsyncClient, api_key: str) -> None:
    small = [{"customerId": f"C{i}", "name": "A", "phone": "+918610560986"} for i in range(10_000)]
    assert len(json.dumps(small)) < 1024 * 1024

    response = await execute(client, api_key, small)

    assert response.status_code == 202
    stored = await execution_row(response.json()["executionId"])
    assert (stored["row_count"], stored["truncated_from"]) == (100, 10_000)


async def test_10000_full_rows_are_over_the_body_limit(
    client: httpx.AsyncClient, api_key: str
) -> None:
    response = await execute(client, api_key, rows(10_000))
    assert response.status_code == 413
    assert response.json()["statusCode"] == 413
    assert await Execution.count() == 0


async def test_numbers_where_strings_are_expected_are_kept_and_checked(
    client: httpx.AsyncClient, api_key: str, run_worker: object
) -> None:
    response = await execute(
        client, api_key, [{"customerId": 1001, "name": "John Doe", "phone": 918610560986}]
    )

    assert response.status_code == 202
    execution_id = response.json()["executionId"]
    await run_worker()  # type: ignore[operator]
    (row,) = await row_states(execution_id)
    assert row["data"]["customerId"] == 1001
    assert row["compliance_status"] == "failed"
    assert row["compliance_reasons"] == ["phone is not an E.164 phone number: 918610560986"]


async def test_duplicate_customer_ids_are_kept_as_separate_rows(
    client: httpx.AsyncClient, api_key: str, run_worker: object
) -> None:
    data = rows(2, customerId="CUST001")
    response = await execute(client, api_key, data)

    assert response.status_code == 202
    execution_id = response.json()["executionId"]
    await run_worker()  # type: ignore[operator]
    await client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key))
    await run_worker()  # type: ignore[operator]
    results = (
        await client.get(f"{PUBLIC}/executions/{execution_id}/results", headers=auth(api_key))
    ).json()["output"]["results"]
    assert [(r["customerId"], r["status"]) for r in results] == [
        ("CUST001", "sent"),
        ("CUST001", "sent"),
    ]
