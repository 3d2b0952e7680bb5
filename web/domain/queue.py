"""arq job names and the enqueue helpers that web and worker both call.

Web never imports worker: it enqueues by name, and a test checks every name here is registered
in worker.settings.WorkerSettings.functions. Job ids are deterministic per execution, step and
run attempt, so enqueueing the same work twice queues it once; a run queued again (by the
reconciler, or by a job handing the rest of a step to the next) counts one more attempt and so
gets an id arq has never seen, which a dead worker's job cannot hold back (arq ignores a job id
while its in-progress marker lasts: the job timeout + 10 s).

Jobs are written exactly as arq's `ArqRedis.enqueue_job` writes them (its serializer, keys and
expiry), by one Lua script: one round trip instead of enqueue_job's three (WATCH, EXISTS,
MULTI/EXEC), a good part of an execute request's CPU (bench/README.md). tests/worker checks
that arq reads them back as its own.
"""

from __future__ import annotations

import time
from uuid import UUID

from arq.connections import ArqRedis
from arq.constants import default_queue_name, expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

from web.domain.script_client import Script, ScriptClient, run_script

RUN_EXECUTION = "run_execution"
DELIVER_WEBHOOK = "deliver_webhook"

JOB_NAMES = (RUN_EXECUTION, DELIVER_WEBHOOK)

# Cron jobs of the runs' loop (worker/settings.py cron_jobs; arq names them `cron:<name>`).
PURGE_IDEMPOTENCY_ANSWERS = "purge_idempotency_answers"
PURGE_PERSONAL_DATA = "purge_personal_data"
CRON_JOB_NAMES = (PURGE_IDEMPOTENCY_ANSWERS, PURGE_PERSONAL_DATA)

# Webhook deliveries have an arq queue (and worker loop, worker/settings.py) of their own, so
# slow receivers can never take the slots that workflow runs need. Runs use arq's default queue.
RUN_QUEUE = default_queue_name
WEBHOOK_QUEUE = "arq:queue:webhooks"


def connect(redis_url: str, timeout_seconds: float) -> ArqRedis:
    """A Redis client for the request path: every call gives up after `timeout_seconds`
    (connecting included), so a Redis outage answers 503 quickly instead of hanging."""
    client: ArqRedis = ArqRedis.from_url(
        redis_url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
    )
    return client


# KEYS: the job, its result, the queue. ARGV: expiry in ms, the serialized job, score, job id.
# Like enqueue_job: nothing happens while the job or its result exists. Returns 1 if queued.
_ENQUEUE_SCRIPT = Script("""
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
""")


async def enqueue(
    redis: ScriptClient | Redis,
    function: str,
    job_id: str,
    *args: str,
    queue_name: str = RUN_QUEUE,
) -> bool:
    """Queue `function(*args)` on `queue_name` under `job_id`, unless that job is already
    queued or has a result; True if it was queued now."""
    enqueued_ms = round(time.time() * 1000)
    job = serialize_job(function, args, {}, None, enqueued_ms)
    queued = await run_script(
        redis,
        _ENQUEUE_SCRIPT,
        [job_key_prefix + job_id, result_key_prefix + job_id, queue_name],
        [str(expires_extra_ms), job, str(enqueued_ms), job_id],
    )
    return bool(queued)


def run_job_id(execution_id: UUID, step: int, attempt: int = 0) -> str:
    """`run_execution:<id>:<step>`, and `:<attempt>` after it once the run was queued again."""
    suffix = f":{attempt}" if attempt else ""
    return f"{RUN_EXECUTION}:{execution_id}:{step}{suffix}"


async def enqueue_run(
    redis: ScriptClient | Redis, execution_id: UUID, step: int = 0, attempt: int = 0
) -> bool:
    """Queue the run of `execution_id` from step index `step` (once per execution, step and
    attempt); True if it was queued now."""
    job_id = run_job_id(execution_id, step, attempt)
    return await enqueue(redis, RUN_EXECUTION, job_id, str(execution_id))


def webhook_job_id(event_id: UUID) -> str:
    return f"{DELIVER_WEBHOOK}:{event_id}"


async def enqueue_webhook(redis: ScriptClient | Redis, event_id: UUID) -> bool:
    """Queue the delivery of one webhook event (once: the job id is the event's), on the
    deliveries' own queue; True if it was queued now."""
    return await enqueue(
        redis, DELIVER_WEBHOOK, webhook_job_id(event_id), str(event_id), queue_name=WEBHOOK_QUEUE
    )
