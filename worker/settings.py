"""arq settings of the two worker loops, their startup/shutdown of shared clients, and
`run_workers()`, which `flowgate worker` runs: both loops in one process.

- WorkerSettings: workflow runs and the reconciler, on arq's default queue.
- DeliverySettings: webhook deliveries, on queue.WEBHOOK_QUEUE, with their own `max_jobs`
  (FLOWGATE_WEBHOOK_CONCURRENCY). However slow the receivers, deliveries only ever fill their
  own slots, never those of a run.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

from arq.connections import RedisSettings
from arq.cron import cron
from arq.worker import Function, create_worker, func

from web import process
from web.domain import clock, queue
from web.domain.pool import start_pool
from web.logs import configure_logging
from web.settings import Settings, get_settings
from worker import jobs, outbound, reconciler
from worker.metrics import Endpoint


async def _open(ctx: dict[str, Any], allow_private: Callable[[Settings], bool]) -> None:
    from piccolo_conf import DB

    # ctx["settings"] may be set already (tests give a worker other settings).
    settings: Settings = ctx.setdefault("settings", get_settings())
    configure_logging(settings.log_level)
    if settings.clock_offset_seconds:  # tests only (web.domain.clock)
        clock.set_offset(settings.clock_offset_seconds)
    # Every outbound call resolves once, is checked, and connects to what was checked.
    ctx["http"] = outbound.client(allow_private=allow_private(settings))
    # In tests (and in run_workers) the pool may already be open; only close what we opened.
    ctx["owns_pool"] = DB.pool is None
    if ctx["owns_pool"]:
        await start_pool(DB, min_size=2, max_size=10)


async def startup(ctx: dict[str, Any]) -> None:
    """The runs' loop: its client calls providers (`base_url`, `url`)."""
    await _open(ctx, lambda settings: settings.provider_allow_private)


async def delivery_startup(ctx: dict[str, Any]) -> None:
    """The deliveries' loop: its client calls webhook receivers."""
    await _open(ctx, lambda settings: settings.webhook_allow_private)


async def shutdown(ctx: dict[str, Any]) -> None:
    from piccolo_conf import DB

    if "http" in ctx:
        await ctx["http"].aclose()
    if ctx.get("owns_pool"):
        await DB.close_connection_pool()


async def start_worker(ctx: dict[str, Any]) -> None:
    """A worker process: the shared clients, its heap settled (web.process), then its
    reconciler loop."""
    await startup(ctx)
    process.settle_heap()
    reconciler.start(ctx)


async def stop_worker(ctx: dict[str, Any]) -> None:
    await reconciler.stop(ctx)
    await shutdown(ctx)


def functions() -> list[Function]:
    """The runs' loop's jobs."""
    settings = get_settings()
    return [
        func(
            jobs.run_execution,
            name=queue.RUN_EXECUTION,
            keep_result=0,
            timeout=settings.job_timeout_seconds,
            max_tries=len(jobs.TRANSIENT_RETRY_DELAYS) + 1,
        ),
    ]


def delivery_functions() -> list[Function]:
    """The deliveries' loop's jobs: webhooks, reviewer notifications, approval deadlines and
    reminders, inbound WhatsApp notifications and the throttled delivery-count events (their
    own queue keeps them all off the runs' slots)."""
    settings = get_settings()
    tries = len(jobs.TRANSIENT_RETRY_DELAYS) + 2
    return [
        func(
            jobs.send_notification,
            name=queue.SEND_NOTIFICATION,
            keep_result=0,
            timeout=settings.notification_timeout_seconds + 20,
            max_tries=len(settings.notification_retry_delays) + tries,
        ),
        func(
            jobs.approval_deadline,
            name=queue.APPROVAL_DEADLINE,
            keep_result=0,
            timeout=60,
            max_tries=tries + 5,
        ),
        func(
            jobs.approval_reminder,
            name=queue.APPROVAL_REMINDER,
            keep_result=0,
            timeout=60,
            max_tries=tries,
        ),
        func(
            jobs.process_whatsapp_notification,
            name=queue.PROCESS_WHATSAPP_NOTIFICATION,
            keep_result=0,
            timeout=120,
            max_tries=len(jobs.TRANSIENT_RETRY_DELAYS) + 1,
        ),
        func(
            jobs.notify_delivery_counts,
            name=queue.NOTIFY_DELIVERY_COUNTS,
            keep_result=0,
            timeout=60,
            max_tries=len(jobs.TRANSIENT_RETRY_DELAYS) + 1,
        ),
        func(
            jobs.deliver_webhook,
            name=queue.DELIVER_WEBHOOK,
            keep_result=0,
            # Each attempt ends at its own deadline (worker/delivery.py); this is a backstop.
            timeout=settings.webhook_timeout_seconds + 20,
            # Our own attempt count decides when to give up; arq's only bounds runaway retries.
            max_tries=len(settings.webhook_retry_delays) + len(jobs.TRANSIENT_RETRY_DELAYS) + 2,
        ),
    ]


class WorkerSettings:
    functions = functions()
    # Hourly: answers to Idempotency-Key requests past FLOWGATE_IDEMPOTENCY_TTL_SECONDS.
    # Daily: audit entries past FLOWGATE_AUDIT_RETENTION_DAYS (with their checkpoint).
    cron_jobs = [
        cron(
            jobs.purge_idempotency_answers,
            name=f"cron:{queue.PURGE_IDEMPOTENCY_ANSWERS}",
            minute=17,
            second=30,
            unique=True,
            timeout=300,
        ),
        cron(
            jobs.purge_audit_entries,
            name=f"cron:{queue.PURGE_AUDIT_ENTRIES}",
            hour=3,
            minute=41,
            second=0,
            unique=True,
            timeout=1800,
        ),
        # Hourly: WhatsApp notifications processed more than a week ago.
        cron(
            jobs.purge_whatsapp_notifications,
            name=f"cron:{queue.PURGE_WHATSAPP_NOTIFICATIONS}",
            minute=47,
            second=30,
            unique=True,
            timeout=300,
        ),
        # Daily, 03:41:30 UTC: personal data of executions that ended FLOWGATE_RETENTION_DAYS ago
        # (in short batches; `unique`: one worker of the deployment runs it).
        cron(
            jobs.purge_personal_data,
            name=f"cron:{queue.PURGE_PERSONAL_DATA}",
            hour=3,
            minute=41,
            second=30,
            unique=True,
            timeout=3600,
        ),
    ]
    # The reconciler is a loop of each worker's own (worker/reconciler.py), not an arq cron job.
    on_startup = start_worker
    on_shutdown = stop_worker
    redis_settings = RedisSettings.from_dsn(get_settings().redis_url)
    queue_name = queue.RUN_QUEUE
    max_jobs = 20
    # How often an idle worker asks Redis for work: this bounds how long a queued job (a run
    # resumed after approval, a webhook) waits for pickup. arq's default is 0.5 s.
    poll_delay = 0.05
    # On SIGTERM: stop taking jobs, let running ones finish for this long, then cancel them
    # (arq queues a cancelled job again; the engine resumes it from the last saved step).
    job_completion_wait = 20
    health_check_interval = 30


class DeliverySettings:
    functions = delivery_functions()
    on_startup = delivery_startup
    on_shutdown = shutdown
    redis_settings = WorkerSettings.redis_settings
    queue_name = queue.WEBHOOK_QUEUE
    max_jobs = get_settings().webhook_concurrency
    poll_delay = WorkerSettings.poll_delay
    job_completion_wait = WorkerSettings.job_completion_wait
    health_check_interval = WorkerSettings.health_check_interval


def run_workers() -> None:
    """Both loops in this process until SIGTERM or SIGINT, which each handles as arq does
    (stop taking jobs, let running ones finish for `job_completion_wait`, cancel the rest).
    If one loop stops by itself (Redis gone at start, say), the other is stopped too and the
    error is raised. On uvloop (web.process)."""
    process.run(_run_workers())


async def _run_workers() -> None:
    from piccolo_conf import DB

    settings = get_settings()
    configure_logging(settings.log_level)
    # This process's metrics on its own port (FLOWGATE_WORKER_METRICS_PORT), if one is set.
    redis = queue.connect(settings.redis_url, settings.redis_timeout_seconds)
    endpoint = Endpoint(settings, redis) if settings.worker_metrics_port else None
    if endpoint is not None:
        endpoint.start()
    await start_pool(DB, min_size=2, max_size=10)
    # arq installs its signal handlers per Worker, and a second Worker would replace the
    # first's: this process handles the signals and tells both.
    workers = [
        create_worker(settings, handle_signals=False)  # type: ignore[arg-type]
        for settings in (WorkerSettings, DeliverySettings)
    ]

    def stop(signum: signal.Signals) -> None:
        for worker in workers:
            if worker.allow_pick_jobs:
                worker.handle_sig_wait_for_completion(signum)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    loops = [asyncio.create_task(worker.async_run()) for worker in workers]
    try:
        await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
        stop(signal.SIGTERM)  # a no-op after a signal; else one loop ended by itself
        await asyncio.wait(loops)
    finally:
        for worker in workers:
            await worker.close()
        await DB.close_connection_pool()
        if endpoint is not None:
            await endpoint.stop()
        await redis.aclose()
    for task in loops:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
