"""Process settings read once from the environment (DATABASE_URL, REDIS_URL, FLOWGATE_*).

Plain Python: imported by the web app, the worker and the CLI alike; never imports Litestar.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from functools import lru_cache


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _secret_key() -> str:
    value = os.environ.get("FLOWGATE_SECRET_KEY")
    if value:
        return value
    # Good for one process only (tokens signed by one process fail in another): scripts/run.sh
    # sets a persistent one, production must set FLOWGATE_SECRET_KEY.
    logging.getLogger("flowgate.settings").warning(
        "FLOWGATE_SECRET_KEY is not set: using a random key for this process only"
    )
    return secrets.token_hex(32)


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    port: int
    # Input limits: public-api.md, "CSV data is automatically truncated to 100 rows maximum".
    max_rows: int
    max_body_bytes: int
    # Worker: arq job timeout, and how long a worker's claim on an execution lasts without renewal.
    job_timeout_seconds: int
    execution_lease_seconds: float
    # Sandbox messaging: an artificial delay per message, so mid-send crashes are testable.
    sandbox_send_delay_seconds: float
    log_level: str
    # Token bucket defaults (public-api.md, "Rate Limit Configuration"); keys may override them.
    rate_limit_enabled: bool
    rate_limit_burst: int
    rate_limit_refill_per_second: float
    # Failed authentications allowed per client IP and minute before that IP gets 429s.
    auth_failures_per_minute: int
    # Redis calls on the request path give up after this long (then 503), never hang.
    redis_timeout_seconds: float
    # Webhooks (public-api.md "Webhook Retry Logic"): timeout per attempt, delays between them.
    webhook_timeout_seconds: float
    webhook_retry_delays: tuple[float, ...]
    webhook_allow_http: bool
    webhook_allow_private: bool
    # How long a process may reuse an API key lookup (revocation takes effect within this).
    key_cache_seconds: float
    # Reconciler: work unfinished in PostgreSQL and untouched this long is queued again.
    stalled_after_seconds: float
    # Dashboard: signs CSRF tokens; every web process of a deployment needs the same value.
    secret_key: str
    cookie_secure: bool
    session_max_age_seconds: int


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings(
        database_url=os.environ.get(
            "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/flowgate"
        ),
        redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        port=_int("FLOWGATE_PORT", 3001),
        max_rows=_int("FLOWGATE_MAX_ROWS", 100),
        max_body_bytes=_int("FLOWGATE_MAX_BODY_BYTES", 1024 * 1024),
        job_timeout_seconds=_int("FLOWGATE_JOB_TIMEOUT_SECONDS", 300),
        execution_lease_seconds=_float("FLOWGATE_EXECUTION_LEASE_SECONDS", 60.0),
        sandbox_send_delay_seconds=_float("FLOWGATE_SANDBOX_SEND_DELAY_SECONDS", 0.0),
        log_level=os.environ.get("FLOWGATE_LOG_LEVEL", "INFO"),
        rate_limit_enabled=_bool("FLOWGATE_RATE_LIMIT_ENABLED", True),
        rate_limit_burst=_int("FLOWGATE_RATE_LIMIT_BURST", 10),
        rate_limit_refill_per_second=_float("FLOWGATE_RATE_LIMIT_REFILL_PER_SECOND", 1.0),
        auth_failures_per_minute=_int("FLOWGATE_AUTH_FAILURES_PER_MINUTE", 20),
        redis_timeout_seconds=_float("FLOWGATE_REDIS_TIMEOUT_SECONDS", 0.5),
        webhook_timeout_seconds=_float("FLOWGATE_WEBHOOK_TIMEOUT_SECONDS", 10.0),
        webhook_retry_delays=tuple(
            float(part)
            for part in os.environ.get("FLOWGATE_WEBHOOK_RETRY_DELAYS", "1,5,15").split(",")
            if part.strip()
        ),
        webhook_allow_http=_bool("FLOWGATE_WEBHOOK_ALLOW_HTTP", False),
        webhook_allow_private=_bool("FLOWGATE_WEBHOOK_ALLOW_PRIVATE", False),
        key_cache_seconds=_float("FLOWGATE_KEY_CACHE_SECONDS", 5.0),
        stalled_after_seconds=_float("FLOWGATE_STALLED_AFTER_SECONDS", 120.0),
        secret_key=_secret_key(),
        cookie_secure=_bool("FLOWGATE_COOKIE_SECURE", False),
        session_max_age_seconds=_int("FLOWGATE_SESSION_MAX_AGE_SECONDS", 12 * 3600),
    )
