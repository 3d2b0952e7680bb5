"""Thin arq entry points. Jobs take ids, call the engine and return a small dict; a job may run
twice, which the engine's lease and saved steps make harmless."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from arq import Retry

from web.domain.errors import UNAVAILABLE_ERRORS
from worker import engine

TRANSIENT_RETRY_DELAYS = (1, 2, 5, 10, 20, 30, 60, 60, 60)


async def run_execution(ctx: dict[str, Any], execution_id: str) -> dict[str, Any]:
    try:
        outcome = await engine.run_execution(UUID(execution_id), ctx["settings"], ctx["http"])
    except UNAVAILABLE_ERRORS as exc:
        delays = TRANSIENT_RETRY_DELAYS
        raise Retry(defer=delays[min(ctx["job_try"], len(delays)) - 1]) from exc
    if outcome.retry_after is not None:
        # Another worker holds the lease: look again once it would have expired.
        raise Retry(defer=outcome.retry_after + 0.1)
    return {"execution_id": execution_id, "outcome": outcome.state}
