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
from datetime import UTC, datetime, timedelta
from uuid import UUID

from arq.connections import ArqRedis
from arq.constants import default_queue_name, expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

from web.domain import clock
from web.domain.script_client import Script, ScriptClient, run_script

RUN_EXECUTION = "run_execution"
DELIVER_WEBHOOK = "deliver_webhook"
# Approval deadlines and reminders (deferred to their moment) and reviewer notifications: on
# the deliveries' queue, so a slow mail server never takes a run's slot.
APPROVAL_DEADLINE = "approval_deadline"
APPROVAL_REMINDER = "approval_reminder"
SEND_NOTIFICATION = "send_notification"
# Inbound WhatsApp notifications (statuses, messages), stored by POST /webhooks/whatsapp.
PROCESS_WHATSAPP_NOTIFICATION = "process_whatsapp_notification"
# A throttled execution.delivery_updated: look at the counts again when the interval is up.
NOTIFY_DELIVERY_COUNTS = "notify_delivery_counts"

JOB_NAMES = (
    RUN_EXECUTION,
    DELIVER_WEBHOOK,
    APPROVAL_DEADLINE,
    APPROVAL_REMINDER,
    SEND_NOTIFICATION,
    PROCESS_WHATSAPP_NOTIFICATION,
    NOTIFY_DELIVERY_COUNTS,
)
# arq cron jobs of the runs' loop (worker/settings.py), registered as `cron:<name>`.
PURGE_IDEMPOTENCY_ANSWERS = "purge_idempotency_answers"
PURGE_AUDIT_ENTRIES = "purge_audit_entries"  # daily: FLOWGATE_AUDIT_RETENTION_DAYS
PURGE_WHATSAPP_NOTIFICATIONS = "purge_whatsapp_notifications"  # hourly: processed a week ago
PURGE_PERSONAL_DATA = "purge_personal_data"  # daily: FLOWGATE_RETENTION_DAYS
CRON_JOB_NAMES = (
    PURGE_IDEMPOTENCY_ANSWERS,
    PURGE_AUDIT_ENTRIES,
    PURGE_WHATSAPP_NOTIFICATIONS,
    PURGE_PERSONAL_DATA,
)

# Webhook deliveries have an arq queue (and worker loop, worker/settings.py) of their own, so
# slow receivers can never take the slots that workflow runs need. Runs use arq's default queue.
RUN_QUEUE = default_queue_name
WEBHOOK_QUEUE = "arq:queue:webhooks"
QUEUES = (RUN_QUEUE, WEBHOOK_QUEUE)  # each one's depth is a metric (web.domain.metrics)


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
    defer_until: datetime | None = None,
) -> bool:
    """Queue `function(*args)` on `queue_name` under `job_id`, unless that job is already
    queued or has a result; True if it was queued now. With `defer_until` the job runs at that
    moment (arq's `_defer_until`: the queue's score is its time), not before."""
    enqueued_ms = round(time.time() * 1000)
    score = enqueued_ms
    if defer_until is not None:
        score = max(enqueued_ms, round(defer_until.timestamp() * 1000))
    job = serialize_job(function, args, {}, None, enqueued_ms)
    queued = await run_script(
        redis,
        _ENQUEUE_SCRIPT,
        [job_key_prefix + job_id, result_key_prefix + job_id, queue_name],
        [str(score - enqueued_ms + expires_extra_ms), job, str(score), job_id],
    )
    return bool(queued)


def run_job_id(execution_id: UUID, step: int, attempt: int = 0) -> str:
    """`run_execution:<id>:<step>`, and `:<attempt>` after it once the run was queued again."""
    suffix = f":{attempt}" if attempt else ""
    return f"{RUN_EXECUTION}:{execution_id}:{step}{suffix}"


async def enqueue_run(
    redis: ScriptClient | Redis,
    execution_id: UUID,
    step: int = 0,
    attempt: int = 0,
    *,
    defer_until: datetime | None = None,
) -> bool:
    """Queue the run of `execution_id` from step index `step` (once per execution, step and
    attempt); True if it was queued now. With `defer_until` (a time of web.domain.clock) no
    worker takes it before then: a send step waiting for its sending hours."""
    job_id = run_job_id(execution_id, step, attempt)
    real = None if defer_until is None else clock.real(defer_until)
    return await enqueue(redis, RUN_EXECUTION, job_id, str(execution_id), defer_until=real)


def webhook_job_id(event_id: UUID) -> str:
    return f"{DELIVER_WEBHOOK}:{event_id}"


async def enqueue_webhook(redis: ScriptClient | Redis, event_id: UUID) -> bool:
    """Queue the delivery of one webhook event (once: the job id is the event's), on the
    deliveries' own queue; True if it was queued now."""
    return await enqueue(
        redis, DELIVER_WEBHOOK, webhook_job_id(event_id), str(event_id), queue_name=WEBHOOK_QUEUE
    )


async def enqueue_deadline(
    redis: ScriptClient | Redis, execution_id: UUID, deadline: datetime
) -> bool:
    """The job that ends an execution whose approval `deadline` passed, run at that moment (once
    per execution and deadline; the reconciler is the backstop)."""
    job_id = f"{APPROVAL_DEADLINE}:{execution_id}:{round(deadline.timestamp())}"
    return await enqueue(
        redis, APPROVAL_DEADLINE, job_id, str(execution_id), queue_name=WEBHOOK_QUEUE,
        defer_until=deadline,
    )  # fmt: skip


async def enqueue_reminder(redis: ScriptClient | Redis, execution_id: UUID, at: datetime) -> bool:
    """The job that reminds the approvers (`remindBefore` the deadline), run at `at`."""
    job_id = f"{APPROVAL_REMINDER}:{execution_id}:{round(at.timestamp())}"
    return await enqueue(
        redis, APPROVAL_REMINDER, job_id, str(execution_id), queue_name=WEBHOOK_QUEUE,
        defer_until=at,
    )  # fmt: skip


def notification_job_id(notification_id: UUID) -> str:
    return f"{SEND_NOTIFICATION}:{notification_id}"


async def enqueue_notification(redis: ScriptClient | Redis, notification_id: UUID) -> bool:
    """Queue the sending of one notification (once: the job id is the notification's)."""
    return await enqueue(
        redis,
        SEND_NOTIFICATION,
        notification_job_id(notification_id),
        str(notification_id),
        queue_name=WEBHOOK_QUEUE,
    )


async def enqueue_whatsapp_notification(redis: ScriptClient | Redis, notification_id: UUID) -> bool:
    """Queue the processing of one stored WhatsApp notification, on the webhooks' queue (never
    the runs'): once per notification."""
    return await enqueue(
        redis,
        PROCESS_WHATSAPP_NOTIFICATION,
        f"{PROCESS_WHATSAPP_NOTIFICATION}:{notification_id}",
        str(notification_id),
        queue_name=WEBHOOK_QUEUE,
    )


async def enqueue_delivery_check(
    redis: ScriptClient | Redis, execution_id: UUID, slot: int, defer_seconds: float
) -> bool:
    """Look at an execution's delivery counts again in `defer_seconds`: once per execution and
    throttle slot (the time of the last event), so many statuses queue one job."""
    return await enqueue(
        redis,
        NOTIFY_DELIVERY_COUNTS,
        f"{NOTIFY_DELIVERY_COUNTS}:{execution_id}:{slot}",
        str(execution_id),
        queue_name=WEBHOOK_QUEUE,
        defer_until=datetime.now(UTC) + timedelta(seconds=defer_seconds),
    )
