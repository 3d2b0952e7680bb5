"""Per-row decisions through the public API's approve: rows by index or customerId, a reason
that reaches the results verbatim, new content checked for compliance again; anything that
does not fit is a 400 naming it and decides nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories import PUBLIC, auth, execution_row, row_states, rows, start
from web.domain.tables import ExecutionRow


async def waiting(client: httpx.AsyncClient, api_key: str, run_worker: Any, **kwargs: Any) -> str:
    execution_id = await start(client, api_key, **kwargs)
    await run_worker()
    return execution_id


async def approve(
    client: httpx.AsyncClient, api_key: str, execution_id: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve", json=body, headers=auth(api_key)
    )


async def results(client: httpx.AsyncClient, api_key: str, execution_id: str) -> dict[str, Any]:
    answer = await client.get(f"{PUBLIC}/executions/{execution_id}/results", headers=auth(api_key))
    body: dict[str, Any] = answer.json()
    return body


async def test_pending_approval_numbers_its_rows(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(3))
    pending = await client.get(
        f"{PUBLIC}/executions/{execution_id}/pending-approval", headers=auth(api_key)
    )
    assert [(r["index"], r["customerId"]) for r in pending.json()["approvalData"]["rows"]] == [
        (0, "CUST001"),
        (1, "CUST002"),
        (2, "CUST003"),
    ]


async def test_rows_are_decided_by_index_and_customer_id_with_reason_and_new_content(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(4))
    edited = "Hi John, your pre-approved offer is ready. Reply STOP to opt out."

    answer = await approve(
        client,
        api_key,
        execution_id,
        {
            "comment": "checked by compliance",
            "rows": [
                {"index": 1, "decision": "reject", "reason": "Customer asked not to be called"},
                {"customerId": "CUST001", "decision": "approve", "content": edited},
                {"customerId": "CUST004", "decision": "reject"},
            ],
        },
    )

    assert answer.status_code == 200
    assert answer.json() == {
        "executionId": execution_id,
        "status": "approved",
        "message": "Execution approved and will continue",
    }
    states = await row_states(execution_id)
    assert [s["decision"] for s in states] == ["approved", "rejected", "approved", "rejected"]
    first = await ExecutionRow.select().where(ExecutionRow.id == states[0]["id"]).first()
    assert first is not None
    assert first["generated_content"] == edited
    assert first["original_content"] is not None and first["original_content"] != edited
    assert first["edited_by"] == first["decided_by"] == "api_key:test customer"

    await run_worker()
    output = (await results(client, api_key, execution_id))["output"]
    assert [(r["customerId"], r["status"], r.get("reason")) for r in output["results"]] == [
        ("CUST001", "sent", None),
        ("CUST002", "rejected", "Customer asked not to be called"),
        ("CUST003", "sent", None),
        ("CUST004", "rejected", "Rejected by reviewer"),
    ]
    assert output["successCount"] == 2


async def test_new_content_that_fails_compliance_is_not_sent(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(2))

    answer = await approve(
        client,
        api_key,
        execution_id,
        {"rows": [{"index": 0, "decision": "approve", "content": "Guaranteed returns! Act now"}]},
    )
    assert answer.status_code == 200
    await run_worker()

    output = (await results(client, api_key, execution_id))["output"]
    first = output["results"][0]
    assert first["status"] == "skipped"
    assert first["reason"].startswith("Compliance check failed: ")
    assert output["results"][1]["status"] == "sent"


@pytest.mark.parametrize(
    ("row_list", "message"),
    [
        (
            [{"index": 9, "decision": "approve"}],
            "rows[0].index: 9 is out of range (the execution has 3 rows, 0 to 2)",
        ),
        ([{"index": -1, "decision": "approve"}], "rows[0].index must be 0 or more; got -1"),
        (
            [{"customerId": "CUST999", "decision": "reject"}],
            "rows[0].customerId: no row has customerId 'CUST999'",
        ),
        ([{"decision": "approve"}], "rows[0]: give either index or customerId"),
        (
            [{"index": 0, "customerId": "CUST001", "decision": "approve"}],
            "rows[0]: give either index or customerId",
        ),
        (
            [{"index": 0, "decision": "approve"}, {"customerId": "CUST001", "decision": "reject"}],
            "rows[1]: row 0 is already decided by rows[0]",
        ),
        (
            [{"index": 0, "decision": "reject", "content": "x"}],
            "rows[0].content: only an approved row can be given new content",
        ),
        (
            [{"index": 0, "decision": "approve", "reason": "x"}],
            "rows[0].reason: only a rejected row has a reason",
        ),
        (
            [{"index": 0, "decision": "approve", "content": "  "}],
            "rows[0].content: the message cannot be empty",
        ),
    ],
)
async def test_a_choice_that_does_not_fit_is_a_400_naming_it_and_decides_nothing(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    row_list: list[dict[str, Any]],
    message: str,
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(3))
    before = await row_states(execution_id)

    answer = await approve(client, api_key, execution_id, {"rows": row_list})

    assert answer.status_code == 400
    assert answer.json() == {"message": message, "error": "Bad Request", "statusCode": 400}
    assert await row_states(execution_id) == before
    stored = await execution_row(execution_id)
    assert stored["status"] == "pending_approval"
    assert stored["approval_status"] == "pending"


async def test_an_ambiguous_customer_id_is_refused(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    twins = rows(2, customerId="CUST001")
    execution_id = await waiting(client, api_key, run_worker, csv_data=twins)

    answer = await approve(
        client, api_key, execution_id, {"rows": [{"customerId": "CUST001", "decision": "reject"}]}
    )

    assert answer.status_code == 400
    assert answer.json()["message"] == (
        "rows[0].customerId: 'CUST001' is the customerId of 2 rows; address them by index"
    )


async def test_an_unknown_decision_is_a_400(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    execution_id = await waiting(client, api_key, run_worker, csv_data=rows(1))
    answer = await approve(
        client, api_key, execution_id, {"rows": [{"index": 0, "decision": "maybe"}]}
    )
    assert answer.status_code == 400
    assert "rows[0].decision" in answer.json()["message"]
