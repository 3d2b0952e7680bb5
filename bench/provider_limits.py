"""Provider limits shared by two workers (issue 16, section 4): 2 real `flowgate worker`
processes, 10 executions of 100 rows at once, against fake providers on 127.0.0.1 that enforce
the limit (a token bucket of one second of the rate; 429 + Retry-After past it) and count
refusals (tests/fake_providers.py):

- LLM at 600 requests/min: generation of all 10 executions, measured for `--seconds` (default
  30 s: the whole 1,000 calls take ~100 s at the limit; the rate is steady long before);
- WhatsApp at 20 messages/s: sending of all 10 executions, approved at once, measured likewise
  (the whole 1,000 messages take ~50 s);

each with the shared limiter (FLOWGATE_PROVIDER_LIMITS_ENABLED=true, the workflow's
requestsPerMinute / messagesPerSecond) and without it (each worker only honours Retry-After on
its own calls). Achieved = accepted calls per second over the measured window, from the first
accepted call; refused = the provider's 429s.

Needs DATABASE_URL (a database of its own: it is truncated) and REDIS_URL (flushed), as
`bench/run.py` passes; prints one JSON line.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/provider_limits.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FLOWGATE_LOG_LEVEL", "WARNING")
os.environ.setdefault("FLOWGATE_SECRET_KEY", "bench")
os.environ.setdefault("FLOWGATE_PROVIDER_ALLOW_PRIVATE", "true")  # fakes on 127.0.0.1
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from tests.fake_providers import FakeChatCompletions, FakeServer, FakeWhatsAppCloud
from web.app import create_app
from web.domain import api_keys, queue
from web.domain.actors import Actor
from web.domain.pool import start_pool
from web.domain.workflows import BFSI_TEMPLATE, save_workflow

ROOT = Path(__file__).resolve().parent.parent
EXECUTIONS = 10
ROWS = 100
PUBLIC = "/api/v1/public"
WORKFLOW_ID = "workflow_bench_provider_limits"
LLM_PER_MINUTE = 600
WHATSAPP_PER_SECOND = 20
LLM_KEY_ENV = "FLOWGATE_BENCH_LLM_KEY"
WHATSAPP_TOKEN_ENV = "FLOWGATE_BENCH_WHATSAPP_TOKEN"  # noqa: S105 (a variable's name)


def _rows() -> list[dict[str, str]]:
    return [
        {"customerId": f"CUST{i:03d}", "name": "John Doe", "phone": f"+9186105{i:05d}",
         "city": "Mumbai", "income_bracket": "75000-100000", "credit_score": "750"}
        for i in range(ROWS)
    ]  # fmt: skip


def _definition(llm: FakeChatCompletions | None, whatsapp: FakeWhatsAppCloud | None) -> Any:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = WORKFLOW_ID
    definition["name"] = "bench: provider limits"
    if llm is not None:
        definition["steps"][0]["settings"] = {
            "provider": "openai_compatible", "base_url": llm.url, "model": llm.model,
            "api_key_env": LLM_KEY_ENV, "prompt_template": "Offer for {{ name }}.",
            "max_tokens": 60, "concurrency": 8, "requestsPerMinute": LLM_PER_MINUTE,
        }  # fmt: skip
    if whatsapp is not None:
        definition["steps"][3]["settings"] = {
            "channel": "whatsapp", "provider": "whatsapp_cloud", "base_url": whatsapp.url,
            "phone_number_id": whatsapp.phone_number_id, "access_token_env": WHATSAPP_TOKEN_ENV,
            "concurrency": 8, "messagesPerSecond": WHATSAPP_PER_SECOND,
        }  # fmt: skip
    return definition


def _workers(shared: bool, secrets_env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        **secrets_env,
        "FLOWGATE_PROVIDER_LIMITS_ENABLED": "true" if shared else "false",
        "FLOWGATE_PROVIDER_ALLOW_PRIVATE": "true",
        "FLOWGATE_LOG_LEVEL": "WARNING",
    }
    return [
        subprocess.Popen(
            [sys.executable, "-m", "web.cli", "worker"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def _figure(server: FakeServer, started: float, seconds: float, limit: float) -> dict[str, Any]:
    window_end = started + seconds
    accepted = [t for t in server.accepted if t <= window_end]
    refused = [t for t in server.refused if t <= window_end]
    first = accepted[0] if accepted else started
    span = max(window_end - first, 1e-9)
    rate = len(accepted) / span
    calls = len(accepted) + len(refused)
    return {
        "limit_per_s": limit,
        "achieved_per_s": round(rate, 2),
        "achieved_share": round(rate / limit, 3),
        "accepted": len(accepted),
        "refused": len(refused),
        "refused_share": round(len(refused) / calls, 4) if calls else 0.0,
        "refused_after_first_s": sum(1 for t in refused if t - first > 1.0),
        "measured_s": round(span, 1),
    }


async def _reset(redis: Any) -> None:
    from piccolo_conf import DB

    await DB.run_ddl(
        "TRUNCATE execution, execution_row, sandbox_message, webhook_event, webhook_attempt, "
        "api_key_usage RESTART IDENTITY CASCADE"
    )
    await redis.flushdb()


async def _status_count(client: httpx.AsyncClient, headers: Any, ids: list[str], s: str) -> int:
    count = 0
    for execution_id in ids:
        body = await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=headers)
        count += body.json()["status"] == s
    return count


async def _run(
    client: httpx.AsyncClient, headers: Any, redis: Any, kind: str, shared: bool, seconds: float
) -> dict[str, Any]:
    await _reset(redis)
    key, token = "sk-bench-" + secrets.token_urlsafe(16), "EAAG" + secrets.token_urlsafe(16)
    llm = FakeChatCompletions(key).start() if kind == "llm" else None
    whatsapp = FakeWhatsAppCloud(token).start() if kind == "whatsapp" else None
    server: FakeServer = llm or whatsapp  # type: ignore[assignment]
    limit = LLM_PER_MINUTE / 60 if kind == "llm" else WHATSAPP_PER_SECOND
    server.enforce_limit(limit)
    await save_workflow(_definition(llm, whatsapp))
    workers = _workers(shared, {LLM_KEY_ENV: key, WHATSAPP_TOKEN_ENV: token})
    try:
        ids = []
        for _ in range(EXECUTIONS):
            response = await client.post(
                f"{PUBLIC}/agents/{WORKFLOW_ID}/execute",
                json={"input": {"csvData": _rows()}},
                headers=headers,
            )
            ids.append(response.json()["executionId"])
        if kind == "whatsapp":
            deadline = time.monotonic() + 120
            while await _status_count(client, headers, ids, "pending_approval") < EXECUTIONS:
                assert time.monotonic() < deadline, "not all executions reached approval"
                await asyncio.sleep(0.2)
            for execution_id in ids:
                await client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=headers)
        started = time.monotonic()
        while not server.requests and time.monotonic() < started + 60:
            await asyncio.sleep(0.01)
        started = server.requests[0].at if server.requests else started
        await asyncio.sleep(max(started + seconds - time.monotonic(), 0))
        return _figure(server, started, seconds, limit)
    finally:
        _stop(workers)
        server.stop()


async def main(seconds: float) -> dict[str, Any]:
    from piccolo_conf import DB

    await start_pool(DB, min_size=2, max_size=10)
    redis = queue.connect(os.environ["REDIS_URL"], 5.0)
    await _reset(redis)
    await DB.run_ddl("TRUNCATE api_key RESTART IDENTITY CASCADE")
    key = await api_keys.create_key(
        api_keys.KeySettings(
            name="provider limits", monthly_limit=10**9, rate_limit_burst=10**9,
            rate_limit_refill_per_second=10**6,
        ),
        actor=Actor.cli(),
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {key.secret}"}
    result: dict[str, Any] = {"executions": EXECUTIONS, "rows": ROWS, "workers": 2}
    app = create_app()
    async with (
        app.lifespan(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench"
        ) as client,
    ):
        for kind in ("llm", "whatsapp"):
            for shared in (True, False):
                name = f"{kind}_{'shared' if shared else 'unshared'}"
                result[name] = await _run(client, headers, redis, kind, shared, seconds)
                print(name, json.dumps(result[name]), file=sys.stderr)
    await redis.aclose()
    await DB.close_connection_pool()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="the measured window")
    print(json.dumps(asyncio.run(main(parser.parse_args().seconds))))
