"""The reconciler loop: each worker makes one pass when it starts, then one every
`reconcile_interval_seconds` or a little sooner (a random 50 to 100 % of it, so workers started
together spread out). It runs beside arq's job loop, not as an arq job: it goes on when Redis was
flushed or every job slot is busy. Passes in several workers at once are safe
(web.domain.recovery)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from web.domain.errors import is_unavailable
from worker import jobs

logger = logging.getLogger("flowgate.reconciler")


def next_wait(interval: float) -> float:
    return interval * random.uniform(0.5, 1.0)  # spreading load, not a secret


async def run_forever(ctx: dict[str, Any]) -> None:
    interval = ctx["settings"].reconcile_interval_seconds
    logger.info("reconciler started: a pass now, then every %g s or sooner", interval)
    while True:
        try:
            await jobs.reconcile(ctx)
        except Exception as exc:
            if not is_unavailable(exc):
                logger.exception("reconciler pass failed")
            else:
                logger.warning("reconciler: PostgreSQL or Redis unreachable, trying again soon")
        await asyncio.sleep(next_wait(interval))


def start(ctx: dict[str, Any]) -> None:
    ctx["reconciler"] = asyncio.create_task(run_forever(ctx))


async def stop(ctx: dict[str, Any]) -> None:
    task: asyncio.Task[None] | None = ctx.pop("reconciler", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
