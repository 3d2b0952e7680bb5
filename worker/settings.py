"""arq WorkerSettings: the job functions, startup/shutdown of shared clients, Redis settings."""

from __future__ import annotations

from typing import Any

import httpx
from arq.connections import RedisSettings
from arq.worker import func

from web.domain import queue
from web.domain.pool import start_pool
from web.logs import configure_logging
from web.settings import get_settings
from worker import jobs, reconciler


async def startup(ctx: dict[str, Any]) -> None:
    from piccolo_conf import DB

    settings = get_settings()
    configure_logging(settings.log_level)
    ctx["settings"] = settings
    ctx["http"] = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
    # In tests the app may already own the pool in this process; only close what we opened.
    ctx["owns_pool"] = DB.pool is None
    if ctx["owns_pool"]:
        await start_pool(DB, min_size=2, max_size=10)


async def shutdown(ctx: dict[str, Any]) -> None:
    from piccolo_conf import DB

    await ctx["http"].aclose()
    if ctx.get("owns_pool"):
        await DB.close_connection_pool()


async def start_worker(ctx: dict[str, Any]) -> None:
    """A worker process: the shared clients, then its reconciler loop."""
    await startup(ctx)
    reconciler.start(ctx)


async def stop_worker(ctx: dict[str, Any]) -> None:
    await reconciler.stop(ctx)
    await shutdown(ctx)


def functions() -> list[Any]:
    settings = get_settings()
    return [
        func(
            jobs.run_execution,
            name=queue.RUN_EXECUTION,
            keep_result=0,
            timeout=settings.job_timeout_seconds,
            max_tries=len(jobs.TRANSIENT_RETRY_DELAYS) + 1,
        ),
        func(
            jobs.deliver_webhook,
            name=queue.DELIVER_WEBHOOK,
            keep_result=0,
            timeout=settings.webhook_timeout_seconds + 20,
            # Our own attempt count decides when to give up; arq's only bounds runaway retries.
            max_tries=len(settings.webhook_retry_delays) + len(jobs.TRANSIENT_RETRY_DELAYS) + 2,
        ),
    ]


class WorkerSettings:
    functions = functions()
    # The reconciler is a loop of each worker's own (worker/reconciler.py), not an arq cron job.
    on_startup = start_worker
    on_shutdown = stop_worker
    redis_settings = RedisSettings.from_dsn(get_settings().redis_url)
    max_jobs = 20
    # How often an idle worker asks Redis for work: this bounds how long a queued job (a run
    # resumed after approval, a webhook) waits for pickup. arq's default is 0.5 s.
    poll_delay = 0.05
    # On SIGTERM: stop taking jobs, let running ones finish for this long, then cancel them
    # (arq queues a cancelled job again; the engine resumes it from the last saved step).
    job_completion_wait = 20
    health_check_interval = 30
