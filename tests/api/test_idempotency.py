"""Idempotency-Key on execute, approve and reject: a retried request gets the first answer and
nothing happens twice (no execution, no quota, no enqueue); misuse gets a clear 4xx."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis

from tests.factories import PUBLIC, auth, create_key, rows
from web.domain import idempotency
from web.domain.tables import ApiKeyUsage, Execution, IdempotentRequest
from web.domain.workflows import BFSI_WORKFLOW_ID

EXECUTE = f"{PUBLIC}/agents/{BFSI_WORKFLOW_ID}/execute"


def body(count: int = 2, **extra: Any) -> dict[str, Any]:
    return {"input": {"csvData": rows(count)}, **extra}


def headers(secret: str, key: str | None) -> dict[str, str]:
    return {**auth(secret), **({"Idempotency-Key": key} if key is not None else {})}


async def quota_used() -> int:
    return sum(row["used"] for row in await ApiKeyUsage.select(ApiKeyUsage.used))


async def test_a_replay_gets_the_same_answer_and_starts_nothing(
    client: httpx.AsyncClient, api_key: str, redis: ArqRedis
) -> None:
    first = await client.post(EXECUTE, json=body(), headers=headers(api_key, "order-42"))
    again = await client.post(EXECUTE, json=body(), headers=headers(api_key, "order-42"))

    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == "application/json"
    assert again.content == first.content  # byte for byte: the same executionId and startedAt
    assert await Execution.count() == 1
    assert await quota_used() == 1
    assert await redis.zcard("arq:queue") == 1
    # A replay costs one rate-limit token like any answer, and says so.
    assert int(again.headers["x-ratelimit-remaining"]) == (
        int(first.headers["x-ratelimit-remaining"]) - 1
    )
    assert "ratelimit-policy" in again.headers


async def test_without_the_header_every_request_starts_an_execution(
    client: httpx.AsyncClient, api_key: str
) -> None:
    plain = await client.post(EXECUTE, json=body(), headers=auth(api_key))
    with_key = await client.post(EXECUTE, json=body(), headers=headers(api_key, "k"))

    assert plain.status_code == with_key.status_code == 202
    assert (
        set(with_key.json())
        == set(plain.json())
        == {
            "executionId",
            "status",
            "startedAt",
            "message",
        }
    )
    await client.post(EXECUTE, json=body(), headers=auth(api_key))
    assert await Execution.count() == 3


async def test_twenty_concurrent_twins_start_exactly_one_execution(
    client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    secret = (await create_key(rate_limit_burst=100)).secret

    answers = await asyncio.gather(
        *(client.post(EXECUTE, json=body(), headers=headers(secret, "twin")) for _ in range(20))
    )

    assert await Execution.count() == 1
    assert await quota_used() == 1
    assert await redis.zcard("arq:queue") == 1
    first = [a for a in answers if a.status_code == 202 and "idempotent-replayed" not in a.headers]
    assert len(first) == 1
    execution_id = first[0].json()["executionId"]
    for answer in answers:
        if answer.status_code == 202:
            assert answer.json()["executionId"] == execution_id
        else:
            assert answer.status_code == 409
            assert answer.json() == {
                "message": "A request with this Idempotency-Key is still being processed",
                "error": "Conflict",
                "statusCode": 409,
            }
            assert "x-ratelimit-remaining" in answer.headers


async def test_the_same_key_with_another_body_or_path_is_refused_with_422(
    client: httpx.AsyncClient, api_key: str
) -> None:
    first = await client.post(EXECUTE, json=body(2), headers=headers(api_key, "once"))
    execution_id = first.json()["executionId"]
    other_body = await client.post(EXECUTE, json=body(3), headers=headers(api_key, "once"))
    other_path = await client.post(
        f"{PUBLIC}/executions/{execution_id}/reject", headers=headers(api_key, "once")
    )

    for answer in (other_body, other_path):
        assert answer.status_code == 422
        assert answer.json() == {
            "message": "Idempotency-Key is already used for a different request",
            "error": "Unprocessable Entity",
            "statusCode": 422,
        }
        assert "x-ratelimit-remaining" in answer.headers
    assert await Execution.count() == 1
    stored = await Execution.select(Execution.status).first()
    assert stored is not None and stored["status"] == "pending"  # the reject did nothing


async def test_keys_of_different_api_keys_never_meet(
    client: httpx.AsyncClient, api_key: str, other_api_key: str
) -> None:
    mine = await client.post(EXECUTE, json=body(), headers=headers(api_key, "shared"))
    theirs = await client.post(EXECUTE, json=body(), headers=headers(other_api_key, "shared"))

    assert mine.status_code == theirs.status_code == 202
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["executionId"] != mine.json()["executionId"]
    assert await Execution.count() == 2


@pytest.mark.parametrize(
    "value", ["", "has space", "x" * 256, "tab\there", "caf\u00e9".encode().decode("latin-1")]
)
async def test_a_malformed_key_is_a_400_naming_the_header(
    client: httpx.AsyncClient, api_key: str, value: str
) -> None:
    answer = await client.post(
        EXECUTE,
        json=body(),
        headers={**auth(api_key), "Idempotency-Key": value.encode("latin-1")},  # type: ignore[dict-item]
    )

    assert answer.status_code == 400
    assert answer.json() == {
        "message": (
            "Idempotency-Key must be 1 to 255 characters, each a visible ASCII character "
            "(0x21-0x7E)"
        ),
        "error": "Bad Request",
        "statusCode": 400,
    }
    assert await Execution.count() == 0


async def test_the_longest_and_oddest_valid_keys_are_taken_as_sent(
    client: httpx.AsyncClient, api_key: str
) -> None:
    for key in ("!" + "~" * 254, '"quoted",;=', "a"):
        first = await client.post(EXECUTE, json=body(), headers=headers(api_key, key))
        again = await client.post(EXECUTE, json=body(), headers=headers(api_key, key))
        assert first.status_code == 202
        assert again.headers["idempotent-replayed"] == "true"
    assert await Execution.count() == 3
    assert sorted(r["key"] for r in await IdempotentRequest.select(IdempotentRequest.key)) == (
        sorted(['"quoted",;=', "!" + "~" * 254, "a"])
    )


async def test_a_refused_request_stores_nothing_so_it_can_be_fixed_and_retried(
    client: httpx.AsyncClient,
) -> None:
    secret = (await create_key(monthly_limit=1)).secret
    invalid = await client.post(
        EXECUTE, json={"input": {"csvData": []}}, headers=headers(secret, "fix-me")
    )
    assert invalid.status_code == 400
    fixed = await client.post(EXECUTE, json=body(), headers=headers(secret, "fix-me"))
    assert fixed.status_code == 202
    assert "idempotent-replayed" not in fixed.headers

    over_quota = await client.post(EXECUTE, json=body(3), headers=headers(secret, "next"))
    assert over_quota.status_code == 403
    assert await IdempotentRequest.count() == 1
    # The replay of the request that was accepted still answers, quota or not.
    replay = await client.post(EXECUTE, json=body(), headers=headers(secret, "fix-me"))
    assert replay.status_code == 202
    assert replay.content == fixed.content


async def test_an_expired_answer_is_forgotten_and_purged(
    client: httpx.AsyncClient, api_key: str
) -> None:
    first = await client.post(EXECUTE, json=body(), headers=headers(api_key, "old"))
    await IdempotentRequest.raw("UPDATE idempotent_request SET expires_at = now() - interval '1s'")

    later = await client.post(EXECUTE, json=body(), headers=headers(api_key, "old"))

    assert later.status_code == 202
    assert "idempotent-replayed" not in later.headers
    assert later.json()["executionId"] != first.json()["executionId"]
    assert await Execution.count() == 2
    await IdempotentRequest.raw("UPDATE idempotent_request SET expires_at = now() - interval '1s'")
    await client.post(EXECUTE, json=body(), headers=headers(api_key, "new"))
    assert await idempotency.purge_expired() == 1
    assert [r["key"] for r in await IdempotentRequest.select(IdempotentRequest.key)] == ["new"]


async def test_the_answer_and_the_execution_are_committed_together(
    client: httpx.AsyncClient, api_key: str, redis: ArqRedis
) -> None:
    """PostgreSQL itself refuses to store the answer (a trigger): the execution goes too."""
    await IdempotentRequest.raw(
        "CREATE FUNCTION refuse_answer() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$"
    )
    await IdempotentRequest.raw(
        "CREATE TRIGGER refuse_answer BEFORE INSERT ON idempotent_request "
        "FOR EACH ROW EXECUTE FUNCTION refuse_answer()"
    )
    try:
        answer = await client.post(EXECUTE, json=body(), headers=headers(api_key, "atomic"))
    finally:
        await IdempotentRequest.raw("DROP TRIGGER refuse_answer ON idempotent_request")
        await IdempotentRequest.raw("DROP FUNCTION refuse_answer()")

    assert answer.status_code == 500
    assert await Execution.count() == 0
    assert await quota_used() == 0
    assert await redis.zcard("arq:queue") == 0
    retried = await client.post(EXECUTE, json=body(), headers=headers(api_key, "atomic"))
    assert retried.status_code == 202
    assert "idempotent-replayed" not in retried.headers


@pytest.mark.parametrize(
    ("decision", "status", "message"),
    [
        ("approve", "approved", "Execution approved and will continue"),
        ("reject", "rejected", "Execution rejected and stopped"),
    ],
)
async def test_a_decision_replayed_answers_as_the_first_time_and_decides_nothing(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    redis: ArqRedis,
    decision: str,
    status: str,
    message: str,
) -> None:
    started = await client.post(EXECUTE, json=body(), headers=auth(api_key))
    execution_id = started.json()["executionId"]
    await run_worker()
    url = f"{PUBLIC}/executions/{execution_id}/{decision}"
    comment = {"comment": "looks right"}

    first = await client.post(url, json=comment, headers=headers(api_key, "decide-1"))
    queued = await redis.zcard("arq:queue")
    again = await client.post(url, json=comment, headers=headers(api_key, "decide-1"))
    plain = await client.post(url, json=comment, headers=auth(api_key))

    assert first.status_code == again.status_code == 200
    assert first.json() == {"executionId": execution_id, "status": status, "message": message}
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert await redis.zcard("arq:queue") == queued  # nothing queued again
    assert plain.status_code == 409  # without the key, the second decision is refused as ever
    row = await Execution.select(Execution.approval_comment).first()
    assert row is not None and row["approval_comment"] == "looks right"


async def test_the_schema_documents_the_header_and_its_answers(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    for path in (
        f"{PUBLIC}/agents/{{workflow_id}}/execute",
        f"{PUBLIC}/executions/{{execution_id}}/approve",
        f"{PUBLIC}/executions/{{execution_id}}/reject",
    ):
        operation = schema["paths"][path]["post"]
        (header,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header" and header["required"] is False
        assert header["schema"]["maxLength"] == 255
        assert {"409", "422"} <= set(operation["responses"])


async def test_the_worker_purges_expired_answers_every_hour(
    client: httpx.AsyncClient, api_key: str
) -> None:
    from worker import jobs
    from worker.settings import WorkerSettings

    await client.post(EXECUTE, json=body(), headers=headers(api_key, "stale"))
    await IdempotentRequest.raw("UPDATE idempotent_request SET expires_at = now() - interval '1s'")

    assert await jobs.purge_idempotency_answers({}) == {"removed": 1}
    assert await IdempotentRequest.count() == 0
    (purge,) = [c for c in WorkerSettings.cron_jobs if c.name == "cron:purge_idempotency_answers"]
    assert purge.minute == 17
