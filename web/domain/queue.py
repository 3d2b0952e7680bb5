"""arq job names and the enqueue helpers that web and worker both call.

Web never imports worker: it enqueues by name, and a test checks every name here is registered
in worker.settings.WorkerSettings.functions. Job ids are deterministic per execution and step,
so enqueueing the same work twice (a retry, a reconciler) queues it once.
"""

from __future__ import annotations

from uuid import UUID

from arq.connections import ArqRedis

RUN_EXECUTION = "run_execution"
DELIVER_WEBHOOK = "deliver_webhook"

JOB_NAMES = (RUN_EXECUTION, DELIVER_WEBHOOK)


def connect(redis_url: str, timeout_seconds: float) -> ArqRedis:
    """A Redis client for the request path: every call gives up after `timeout_seconds`
    (connecting included), so a Redis outage answers 503 quickly instead of hanging."""
    client: ArqRedis = ArqRedis.from_url(
        redis_url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
    )
    return client


def run_job_id(execution_id: UUID, step: int) -> str:
    return f"{RUN_EXECUTION}:{execution_id}:{step}"


async def enqueue_run(redis: ArqRedis, execution_id: UUID, step: int = 0) -> None:
    """Queue the run of `execution_id` from step index `step` (once per execution and step)."""
    await redis.enqueue_job(
        RUN_EXECUTION, str(execution_id), _job_id=run_job_id(execution_id, step)
    )


def webhook_job_id(event_id: UUID) -> str:
    return f"{DELIVER_WEBHOOK}:{event_id}"


async def enqueue_webhook(redis: ArqRedis, event_id: UUID) -> None:
    """Queue the delivery of one webhook event (once: the job id is the event's)."""
    await redis.enqueue_job(DELIVER_WEBHOOK, str(event_id), _job_id=webhook_job_id(event_id))
