"""arq job names and the enqueue helpers that web and worker both call.

Web never imports worker: it enqueues by name, and a test checks every name here is registered
in worker.settings.WorkerSettings.functions. Job ids are deterministic per execution and step,
so enqueueing the same work twice (a retry, a reconciler) queues it once.
"""

from __future__ import annotations

from uuid import UUID

from arq.connections import ArqRedis

RUN_EXECUTION = "run_execution"

JOB_NAMES = (RUN_EXECUTION,)


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
