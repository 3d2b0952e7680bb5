"""Every Prometheus metric of flowgate (web and worker), the one-line calls that record them, and
reading them for a scrape (README "Metrics" lists each one).

Labels are bounded by design: route templates (never a raw path), HTTP methods (others are
`OTHER`), status codes, workflow ids (a workflow is created by an admin, so there are few), job
names, provider names and fixed outcome words. Never an execution id, key, phone number or text.

Under `flowgate serve` every web worker process writes its values to files in
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode, which `flowgate serve` sets up)
and a scrape of any of them sums them all. A `flowgate worker` keeps its own values in memory
and serves them on its own port (worker/metrics.py), so the two never mix.
"""

from __future__ import annotations

import collections
import hmac
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from uuid import UUID

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import values as _values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from web.domain import queue

# The classic text format (what generate_latest writes), which every Prometheus reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Chosen by prometheus-client when it was imported, from PROMETHEUS_MULTIPROC_DIR.
MULTIPROCESS = _values.ValueClass is not _values.MutexValue

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 150.0, 300.0)
_HOURS = (10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 3 * 86400)

HTTP_REQUESTS = Counter(
    "flowgate_http_requests",
    "HTTP requests answered, by route template, method and status code",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "flowgate_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template and method",
    ["route", "method"],
    buckets=_FAST,
)
REFUSALS = Counter(
    "flowgate_refusals",
    "Requests refused by a limit: rate_limit, auth_failures, quota, sign_in",
    ["reason"],
)
EXECUTIONS_STARTED = Counter(
    "flowgate_executions_started", "Executions stored and queued, by workflow", ["workflow"]
)
EXECUTIONS_FINISHED = Counter(
    "flowgate_executions_finished",
    "Executions that reached a final status (completed, failed, cancelled), by workflow",
    ["workflow", "status"],
)
APPROVAL_WAIT = Histogram(
    "flowgate_approval_wait_seconds",
    "Time an execution waited in pending_approval before a reviewer decided",
    ["workflow", "decision"],
    buckets=_HOURS,
)
ROWS_FINISHED = Counter(
    "flowgate_rows_finished",
    "Rows of finished executions by their final result status",
    ["workflow", "status"],
)
JOBS = Counter(
    "flowgate_jobs",
    "Worker jobs run, by job name and outcome (ok, retry, failed, cancelled)",
    ["job", "outcome"],
)
JOB_DURATION = Histogram(
    "flowgate_job_duration_seconds",
    "How long a worker job ran, by job name",
    ["job"],
    buckets=_SLOW,
)
WEBHOOK_ATTEMPTS = Counter(
    "flowgate_webhook_attempts",
    "Webhook delivery attempts by outcome (delivered, http_error, timeout, connection_error, "
    "refused)",
    ["outcome"],
)
WEBHOOK_DURATION = Histogram(
    "flowgate_webhook_attempt_duration_seconds",
    "Duration of one webhook attempt, by outcome",
    ["outcome"],
    buckets=_FAST,
)
PROVIDER_CALLS = Counter(
    "flowgate_provider_calls",
    "Rows handed to a provider, by provider, operation (generate, send) and outcome",
    ["provider", "operation", "outcome"],
)
PROVIDER_DURATION = Histogram(
    "flowgate_provider_call_duration_seconds",
    "Duration of one provider call (a row; a batch for the sandbox), by provider and operation",
    ["provider", "operation"],
    buckets=_SLOW,
)
LLM_TOKENS = Counter(
    "flowgate_llm_tokens",
    "Tokens an LLM provider reported using, by provider and type (prompt, completion)",
    ["provider", "type"],
)

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"

# (route, method, status) -> the counter and histogram children: one dict lookup per request.
_http_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def http_request(route: str | None, method: str, status: int, seconds: float) -> None:
    """One answered request. `route` is the router's path template (None: nothing matched)."""
    key = (route or UNMATCHED_ROUTE, method, status)
    series = _http_series.get(key)
    if series is None:
        label = method if method in _METHODS else "OTHER"
        series = (
            HTTP_REQUESTS.labels(key[0], label, str(status)),
            HTTP_DURATION.labels(key[0], label),
        )
        _http_series[key] = series
    series[0].inc()
    series[1].observe(seconds)


def refused(reason: str) -> None:
    REFUSALS.labels(reason).inc()


def execution_started(workflow: str) -> None:
    EXECUTIONS_STARTED.labels(workflow).inc()


def _results(output: Any) -> list[Any]:
    if isinstance(output, str):
        output = json.loads(output)
    results = output.get("results") if isinstance(output, dict) else None
    return results if isinstance(results, list) else []


def rows_finished(workflow: str, output: Any) -> None:
    """The rows of an execution's results (its `output`), by their final status."""
    counts: dict[str, int] = {}
    for result in _results(output):
        status = str(result.get("status")) if isinstance(result, dict) else "unknown"
        counts[status] = counts.get(status, 0) + 1
    for status, count in counts.items():
        ROWS_FINISHED.labels(workflow, status).inc(count)


def execution_ended(row: Mapping[str, Any], output: Any = None) -> None:
    """After a transition committed: `row` has the execution's `workflow`, `status` and
    `output` (a transition's RETURNING columns). Counts final statuses and their rows; `output`
    overrides the row's when the results were written after the transition."""
    status = str(row["status"])
    if status not in FINAL_STATUSES:
        return
    workflow = str(row["workflow"])
    EXECUTIONS_FINISHED.labels(workflow, status).inc()
    results = output if output is not None else row.get("output")
    if results:
        rows_finished(workflow, results)


async def approval_decided(execution_id: UUID, decision: str) -> None:
    """After a decision committed: how long the execution waited for it. The decision stands
    whatever happens here: a failed read only leaves this one out."""
    from web.domain.tables import Execution

    try:
        rows = await Execution.raw(
            "SELECT workflow, EXTRACT(EPOCH FROM approval_decided_at - approval_requested_at) "
            "AS waited FROM execution WHERE id = {} AND approval_requested_at IS NOT NULL",
            execution_id,
        )
    except Exception:  # PostgreSQL gone after the commit: the answer must still be the decision's
        return
    if rows and rows[0]["waited"] is not None:
        APPROVAL_WAIT.labels(str(rows[0]["workflow"]), decision).observe(float(rows[0]["waited"]))


class Timer:
    """`with Timer() as t: ...` then `t.seconds`."""

    seconds = 0.0

    def __enter__(self) -> Timer:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self._started


def job_ran(job: str, outcome: str, seconds: float) -> None:
    JOBS.labels(job, outcome).inc()
    JOB_DURATION.labels(job).observe(seconds)


def webhook_attempt(status: int | None, error: str | None, seconds: float) -> None:
    if status is not None:
        outcome = "delivered" if 200 <= status < 300 else "http_error"
    elif error and error.startswith("Timed out"):
        outcome = "timeout"
    elif error and (error.startswith("Refused") or error.startswith("No webhook URL")):
        outcome = "refused"
    else:
        outcome = "connection_error"
    WEBHOOK_ATTEMPTS.labels(outcome).inc()
    WEBHOOK_DURATION.labels(outcome).observe(seconds)


# The children of the provider metrics, as for HTTP: a template provider makes one call per row,
# and labels() (a lock and a lookup) per call was most of what observing a row cost.
_provider_durations: dict[tuple[str, str], Any] = {}
_provider_counts: dict[tuple[str, str, str], Any] = {}


def provider_call(provider: str, operation: str, outcomes: Sequence[str], seconds: float) -> None:
    """One provider call (`seconds`) and the outcome of each row it carried."""
    duration = _provider_durations.get((provider, operation))
    if duration is None:
        duration = PROVIDER_DURATION.labels(provider, operation)
        _provider_durations[(provider, operation)] = duration
    duration.observe(seconds)
    tally = {outcomes[0]: 1} if len(outcomes) == 1 else collections.Counter(outcomes)
    for outcome, count in tally.items():
        key = (provider, operation, outcome)
        counter = _provider_counts.get(key)
        if counter is None:
            counter = _provider_counts[key] = PROVIDER_CALLS.labels(*key)
        counter.inc(count)


def llm_tokens(provider: str, usage: Mapping[str, Any] | None) -> None:
    if not usage:
        return
    for kind in ("prompt", "completion"):
        count = usage.get(f"{kind}_tokens")
        if isinstance(count, int) and count > 0:
            LLM_TOKENS.labels(provider, kind).inc(count)


# --- scraping ------------------------------------------------------------------------------


def scrape_refusal(authorization: str | None, token: str | None) -> int | None:
    """None when `authorization` carries the metrics token; 404 when none is configured (the
    endpoint does not exist), else 401. The token is compared in constant time."""
    if not token:
        return 404
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return 401
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return 401
    return None


SCRAPE_ERRORS = {
    401: ("Invalid metrics token", "Unauthorized"),
    404: ("Not Found", "Not Found"),
}


class _Sampled(Collector):
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self.families


async def sample_queues(redis: Redis) -> list[GaugeMetricFamily]:
    """Jobs waiting in each arq queue, ready now or deferred (retries, backoff), read at scrape.
    Nothing when Redis does not answer: the rest of the scrape still works."""
    now_ms = int(time.time() * 1000)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for name in queue.QUEUES:
                pipe.zcard(name)
                pipe.zcount(name, "-inf", now_ms)
            answers = await pipe.execute()
    except Exception:  # Redis down or slow: the queue depth is left out of this scrape
        return []
    family = GaugeMetricFamily(
        "flowgate_queue_jobs",
        "Jobs in each arq queue, ready to run or deferred, sampled at scrape",
        labels=["queue", "state"],
    )
    for index, name in enumerate(queue.QUEUES):
        total, ready = int(answers[2 * index]), int(answers[2 * index + 1])
        family.add_metric([name, "ready"], ready)
        family.add_metric([name, "deferred"], total - ready)
    return [family]


def exposition(sampled: list[GaugeMetricFamily]) -> bytes:
    """The text exposition of this process (or, in multiprocess mode, of every web process),
    followed by the values sampled for this scrape."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if sampled:
        extra = CollectorRegistry(auto_describe=False)
        extra.register(_Sampled(sampled))
        body += generate_latest(extra)
    return body
