"""The public API end to end: execute -> pending_approval -> approve/reject -> results."""

from __future__ import annotations

import re
from uuid import UUID

import httpx

from tests.factories import PUBLIC, auth, execute, execution_row, row_states, rows, start
from web.domain.tables import SandboxMessage

ISO_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def test_execute_answers_202_with_the_spec_body(
    client: httpx.AsyncClient, api_key: str
) -> None:
    response = await execute(client, api_key, rows(3), description="October campaign")

    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"executionId", "status", "startedAt", "message"}
    UUID(body["executionId"])
    assert body["status"] == "pending"
    assert ISO_MS_Z.fullmatch(body["startedAt"])
    assert body["message"] == "Execution started successfully"
    stored = await execution_row(body["executionId"])
    assert stored["status"] == "pending"
    assert stored["description"] == "October campaign"
    assert stored["row_count"] == 3
    assert stored["truncated_from"] is None
    assert [r["data"] for r in await row_states(body["executionId"])] == rows(3)


async def test_rows_get_time_ordered_ids_of_their_execute(
    client: httpx.AsyncClient, api_key: str
) -> None:
    # Version 7 (RFC 9562): the first 48 bits are the execute's time in milliseconds, so one
    # execute's rows sit together in execution_row_pkey (web.domain.executions._ROW_ID).
    first = await start(client, api_key, csv_data=rows(100))
    second = await start(client, api_key, csv_data=rows(100))
    ids = {e: [UUID(str(r["id"])) for r in await row_states(e)] for e in (first, second)}
    started = {e: (await execution_row(e))["created_at"] for e in (first, second)}

    for execution_id, row_ids in ids.items():
        assert len(set(row_ids)) == 100
        assert {(i.version, i.variant) for i in row_ids} == {(7, "specified in RFC 4122")}
        [milliseconds] = {i.int >> 80 for i in row_ids}  # one statement, one time
        assert abs(milliseconds - started[execution_id].timestamp() * 1000) < 1_000
    assert max(ids[first]) < min(ids[second])  # a later execute sorts after


async def test_status_is_pending_until_a_worker_runs(
    client: httpx.AsyncClient, api_key: str
) -> None:
    execution_id = await start(client, api_key)

    response = await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(api_key))

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "id": execution_id,
        "status": "pending",
        "startedAt": body["startedAt"],
        "completedAt": None,
        "error": None,
        "approvalStatus": None,
    }
    assert ISO_MS_Z.fullmatch(body["startedAt"])


async def test_run_pauses_for_approval_with_the_spec_pending_approval_body(
    client: httpx.AsyncClient, api_key: str, run_worker
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(3))
    await run_worker()

    status = (
        await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(api_key))
    ).json()
    assert status["status"] == "pending_approval"
    assert status["approvalStatus"] == "pending"
    assert status["completedAt"] is None

    response = await client.get(
        f"{PUBLIC}/executions/{execution_id}/pending-approval", headers=auth(api_key)
    )
    assert response.status_code == 200
    body = response.json()
    generated = [r["generated_content"] for r in body["approvalData"]["rows"]]
    assert body == {
        "id": execution_id,
        "workflowId": "workflow_bfsi_marketing_template",
        "status": "pending_approval",
        "approvalData": {
            "rows": [
                {
                    "customerId": row["customerId"],
                    "name": row["name"],
                    "phone": row["phone"],
                    "generated_content": generated[index],
                    "compliance_status": "passed",
                    "index": index,  # added beside the contract: per-row decisions address it
                    "complianceReasons": [],  # added too: why a row fails compliance
                }
                for index, row in enumerate(rows(3))
            ],
            "metadata": {
                "totalRows": 3,
                "title": "Review Generated WhatsApp Messages",
                "description": "Please review the AI-generated content",
                "allowBulkApproval": True,
                "requireComment": False,
                # Added beside the contract (maker-checker, deadlines).
                "approvalsRequired": 1,
                "approvalsReceived": 0,
                "approvalProgress": "0 of 1 approvals",
                "approvalDeadline": None,
            },
            "displayFields": [
                "customerId",
                "name",
                "phone",
                "generated_content",
                "compliance_status",
            ],
        },
        "startedAt": status["startedAt"],
    }
    assert generated[0].startswith("Dear John, as a valued customer you are pre-approved")
    assert "Mumbai" in generated[0]
    assert all(text.endswith("Reply STOP to opt out.") for text in generated)
    assert await SandboxMessage.count() == 0


async def test_approve_resumes_the_run_and_results_list_every_row(
    client: httpx.AsyncClient, api_key: str, run_worker
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(3))
    await run_worker()

    response = await client.post(
        f"{PUBLIC}/executions/{execution_id}/approve",
        json={"comment": "Content approved, looks good"},
        headers=auth(api_key),
    )
    assert response.status_code == 200
    assert response.json() == {
        "executionId": execution_id,
        "status": "approved",
        "message": "Execution approved and will continue",
    }
    assert (await execution_row(execution_id))["approval_comment"] == "Content approved, looks good"

    await run_worker()

    status = (
        await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(api_key))
    ).json()
    assert status["status"] == "completed"
    assert status["approvalStatus"] == "approved"
    assert ISO_MS_Z.fullmatch(status["completedAt"])

    response = await client.get(
        f"{PUBLIC}/executions/{execution_id}/results", headers=auth(api_key)
    )
    assert response.status_code == 200
    body = response.json()
    messages = {
        str(m["execution_row"]): m["message_id"]
        for m in await SandboxMessage.select().output(load_json=True)
    }
    states = await row_states(execution_id)
    assert body == {
        "id": execution_id,
        "status": "completed",
        "output": {
            "successCount": 3,
            "failedCount": 0,
            "results": [
                {
                    "customerId": f"CUST00{i + 1}",
                    "status": "sent",
                    "messageId": messages[str(states[i]["id"])],
                }
                for i in range(3)
            ],
        },
        "error": None,
        "startedAt": status["startedAt"],
        "completedAt": status["completedAt"],
    }
    assert all(re.fullmatch(r"whatsapp_msg_[0-9a-f]{32}", m) for m in messages.values())
    stored = await execution_row(execution_id)
    assert [s["type"] for s in stored["step_results"]] == [
        "generate_content",
        "compliance_check",
        "approval",
        "send_message",
    ]


async def test_rows_failing_compliance_are_skipped_with_the_reason(
    client: httpx.AsyncClient, api_key: str, run_worker
) -> None:
    data = rows(2)
    data[1]["phone"] = "12345"
    execution_id = await start(client, api_key, csv_data=data)
    await run_worker()
    pending = (
        await client.get(
            f"{PUBLIC}/executions/{execution_id}/pending-approval", headers=auth(api_key)
        )
    ).json()
    assert [r["compliance_status"] for r in pending["approvalData"]["rows"]] == [
        "passed",
        "failed",
    ]
    assert (await row_states(execution_id))[1]["compliance_reasons"] == [
        "phone is not an E.164 phone number: '12345'"
    ]

    await client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key))
    await run_worker()

    output = (
        await client.get(f"{PUBLIC}/executions/{execution_id}/results", headers=auth(api_key))
    ).json()["output"]
    assert output["successCount"] == 1
    assert output["failedCount"] == 0
    assert output["results"][1] == {
        "customerId": "CUST002",
        "status": "skipped",
        "messageId": None,
        "reason": "Compliance check failed: phone is not an E.164 phone number: '12345'",
    }
    assert await SandboxMessage.count() == 1


async def test_reject_cancels_the_execution_and_sends_nothing(
    client: httpx.AsyncClient, api_key: str, run_worker
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(2))
    await run_worker()

    response = await client.post(
        f"{PUBLIC}/executions/{execution_id}/reject",
        json={"comment": "Content does not meet standards"},
        headers=auth(api_key),
    )
    assert response.status_code == 200
    assert response.json() == {
        "executionId": execution_id,
        "status": "rejected",
        "message": "Execution rejected and stopped",
    }
    await run_worker()

    status = (
        await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth(api_key))
    ).json()
    assert status["status"] == "cancelled"
    assert status["approvalStatus"] == "rejected"
    assert ISO_MS_Z.fullmatch(status["completedAt"])
    results = (
        await client.get(f"{PUBLIC}/executions/{execution_id}/results", headers=auth(api_key))
    ).json()
    assert results["output"] == {
        "successCount": 0,
        "failedCount": 0,
        "results": [
            {
                "customerId": f"CUST00{i}",
                "status": "rejected",
                "messageId": None,
                "reason": "Rejected by reviewer",
            }
            for i in (1, 2)
        ],
    }
    stored = await execution_row(execution_id)
    assert stored["approval_comment"] == "Content does not meet standards"
    assert await SandboxMessage.count() == 0


async def test_csv_data_is_cut_to_100_rows_and_the_cut_is_recorded(
    client: httpx.AsyncClient, api_key: str
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(150))

    stored = await execution_row(execution_id)
    assert stored["row_count"] == 100
    assert stored["truncated_from"] == 150
    states = await row_states(execution_id)
    assert [s["data"]["customerId"] for s in states] == [f"CUST{i:03d}" for i in range(1, 101)]


async def test_an_execution_without_a_body_description_is_fine(
    client: httpx.AsyncClient, api_key: str
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(1))
    assert (await execution_row(execution_id))["description"] is None


async def test_pending_approval_rows_carry_their_compliance_reasons(
    client: httpx.AsyncClient, api_key: str, run_worker
) -> None:
    data = rows(2)
    data[1]["phone"] = "555"
    execution_id = await start(client, api_key, csv_data=data)
    await run_worker()

    body = (
        await client.get(
            f"{PUBLIC}/executions/{execution_id}/pending-approval", headers=auth(api_key)
        )
    ).json()

    shown = [(r["compliance_status"], r["complianceReasons"]) for r in body["approvalData"]["rows"]]
    assert shown == [
        ("passed", []),
        ("failed", ["phone is not an E.164 phone number: '555'"]),
    ]
    # The spec's keys are all still there, unchanged.
    assert body["approvalData"]["displayFields"] == [
        "customerId",
        "name",
        "phone",
        "generated_content",
        "compliance_status",
    ]
    schema = (await client.get("/schema/openapi.json")).json()["components"]["schemas"]
    assert "`complianceReasons`" in schema["ApprovalData"]["properties"]["rows"]["description"]
