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


async def test_invalid_utf8_gets_the_same_message_from_every_msgspec(
    client: httpx.AsyncClient, api_key: str
) -> None:
    # msgspec < 0.23 raised UnicodeDecodeError, 0.23 a DecodeError: the customer sees one text.
    for body in (
        b'{"input": {"csvData": [{"customerId": "\xff\xfe", "name": "A", "phone": "+1"}]}}',
        b'{"input": {"\xc3\x28": []}}',
    ):
        response = await client.post(EXECUTE, content=body, headers={**auth(api_key), **JSON})
        assert response.json() == {
            "message": "Request body is not valid JSON: it is not UTF-8",
            "error": "Bad Request",
            "statusCode": 400,
        }
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


async def test_a_nul_character_in_a_decision_comment_is_a_400(
    client: httpx.AsyncClient, api_key: str, run_worker: object
) -> None:
    """Found by schemathesis: the comment reached PostgreSQL, which refuses U+0000 (a 500)."""
    execution_id = (await execute(client, api_key)).json()["executionId"]
    await run_worker()  # type: ignore[operator]
    for action in ("approve", "reject"):
        response = await client.post(
            f"{PUBLIC}/executions/{execution_id}/{action}",
            json={"comment": "g\u007f\u0000\u00b7"},
            headers=auth(api_key),
        )
        assert response.status_code == 400
        assert response.json() == {
            "message": "comment contains a NUL character (\\u0000)",
            "error": "Bad Request",
            "statusCode": 400,
        }
    assert (await execution_row(execution_id))["status"] == "pending_approval"


async def test_a_nul_character_that_reaches_the_database_is_a_400_not_a_500(
    admin_client: httpx.AsyncClient,
) -> None:
    from tests.factories import post_form

    response = await post_form(
        admin_client, "/dashboard/users/new", {"email": "a\u0000b@example.com", "role": "reviewer"}
    )
    assert response.status_code == 400
    assert "Text must not contain the NUL character" in response.text


async def test_unknown_dashboard_pages_are_html_404s(admin_client: httpx.AsyncClient) -> None:
    for method in ("GET", "POST"):
        response = await admin_client.request(method, "/dashboard/no-such-page")
        assert response.status_code in (404, 405)
        assert "<h1>40" in response.text
