"""Step types of the engine: one module each, all with the same signature,
`async def run(ctx: StepContext) -> dict` returning a small JSON summary of what it did."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx

from web.settings import Settings


class StepError(Exception):
    """A step cannot succeed on this input: the execution fails with this message."""


class LeaseLost(Exception):
    """Another worker has taken over this execution: stop without writing anything more."""


@dataclass(frozen=True)
class StepContext:
    execution_id: UUID
    index: int
    name: str
    settings: dict[str, Any]
    app: Settings
    http: httpx.AsyncClient
    renew_lease: Callable[[], Awaitable[None]]


StepRunner = Callable[[StepContext], Awaitable[dict[str, Any]]]


def runners() -> dict[str, StepRunner]:
    from worker.steps import compliance_check, generate_content, send_message

    return {
        "generate_content": generate_content.run,
        "compliance_check": compliance_check.run,
        "send_message": send_message.run,
    }
