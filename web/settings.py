"""Process settings read once from the environment (DATABASE_URL, REDIS_URL, FLOWGATE_*).

Plain Python: imported by the web app, the worker and the CLI alike; never imports Litestar.
Each variable is read by one typed helper (`_int`, `_float`, `_bool`, `_floats`, `_choice`,
`_str`), which refuses a bad value with `NAME: expected …, got '…'` (a `SettingsError`); an
empty value counts as unset. The README's "Configuration" table lists every variable read here.

A checkout also has `.dev/env` (written by `scripts/services.sh up`, which `make run` calls):
the service URLs and local-development settings of that checkout. `apply_dev_env()` copies the
values the environment does not set into it, for the `flowgate` command of a second terminal.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import ssl
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEV_ENV = Path(".dev") / "env"
# A flowgate checkout is a folder with this file beside .dev/ (a deployment has no .dev/).
CHECKOUT_MARKER = "piccolo_conf.py"


class SettingsError(ValueError):
    """A variable with a value that cannot be used: the message names it and the value."""

    def __init__(self, name: str, expected: str, value: str) -> None:
        super().__init__(f"{name}: expected {expected}, got {value!r}")
        self.name = name


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _str(name: str, default: str) -> str:
    return _raw(name) or default


def _int(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    expected = f"an integer from {minimum}" + (f" to {maximum}" if maximum is not None else " up")
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(name, expected, value) from None
    if number < minimum or (maximum is not None and number > maximum):
        raise SettingsError(name, expected, value)
    return number


def _number(name: str, text: str, minimum: float, expected: str, value: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise SettingsError(name, expected, value) from None
    if not number >= minimum or number == float("inf"):  # refuses nan and inf too
        raise SettingsError(name, expected, value)
    return number


def _float(name: str, default: float, minimum: float = 0.0) -> float:
    value = _raw(name)
    if value is None:
        return default
    return _number(name, value, minimum, f"a number of at least {minimum:g}", value)


def _floats(name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """A comma-separated list of numbers (seconds), e.g. `1,5,15`."""
    value = _raw(name)
    if value is None:
        return default
    expected = "comma-separated numbers of at least 0, e.g. '1,5,15'"
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts:
        raise SettingsError(name, expected, value)
    return tuple(_number(name, part, 0.0, expected, value) for part in parts)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise SettingsError(name, "true or false (also 1/0, yes/no, on/off)", value)


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _raw(name)
    if value is None:
        return default
    if value.upper() not in choices:
        raise SettingsError(name, "one of " + ", ".join(choices), value)
    return value.upper()


def _proxies(name: str, default: str) -> tuple[str, ...]:
    """Comma-separated IP addresses and networks (`127.0.0.1,10.0.0.0/8`), or `*` for any."""
    value = _raw(name) or default
    entries = tuple(part.strip() for part in value.split(",") if part.strip())
    expected = "comma-separated IP addresses or networks (e.g. '127.0.0.1,10.0.0.0/8'), or '*'"
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise SettingsError(name, expected, value) from None
        if "%" in entry:  # an IPv6 zone id: not an address a proxy connects from
            raise SettingsError(name, expected, value)
    return entries


def _keywords(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated words (`STOP,UNSUBSCRIBE`), kept upper-case without spaces: inbound
    messages are compared the same way (web.domain.whatsapp_inbound)."""
    value = _raw(name)
    if value is None:
        return default
    words = tuple("".join(part.split()).upper() for part in value.split(",") if part.strip())
    if not words:
        raise SettingsError(name, "comma-separated keywords, e.g. 'STOP,UNSUBSCRIBE'", value)
    return words


def _optional_port(name: str) -> int | None:
    """A TCP port, or None when unset."""
    if _raw(name) is None:
        return None
    return _int(name, 0, minimum=1, maximum=65535)


def _host(name: str, default: str) -> str:
    """An IP address to listen on (`127.0.0.1`, `0.0.0.0`, `::`)."""
    value = _raw(name) or default
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise SettingsError(name, "an IP address such as 127.0.0.1 or 0.0.0.0", value) from None
    return value


def secret_key_is_set() -> bool:
    return _raw("FLOWGATE_SECRET_KEY") is not None


def _secret_key() -> str:
    # A random one is good for one process only (tokens signed by one process fail in another):
    # `make run` keeps a persistent one in .dev/env, production must set FLOWGATE_SECRET_KEY.
    # The web app warns when it signs with a random key (web.app); other commands never sign.
    return _raw("FLOWGATE_SECRET_KEY") or secrets.token_hex(32)


def read_env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines (a value may be in single or double quotes); `#` lines are comments."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def find_dev_env(start: Path | None = None) -> Path | None:
    """The checkout's `.dev/env`: in the current directory or the nearest parent that is a
    flowgate checkout (has piccolo_conf.py), else beside the source of this package (an
    editable install run from anywhere). None in a deployment."""
    here = (start or Path.cwd()).resolve()
    source_checkout = Path(__file__).resolve().parent.parent
    for folder in [here, *here.parents, source_checkout]:
        candidate = folder / DEV_ENV
        if (folder / CHECKOUT_MARKER).is_file() and candidate.is_file():
            return candidate
    return None


def apply_dev_env(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Fill the variables the environment leaves unset from the checkout's .dev/env (the
    environment always wins). FLOWGATE_DEV_ENV names another file; set it empty to read none."""
    env = os.environ if environ is None else environ
    chosen = env.get("FLOWGATE_DEV_ENV")
    if chosen is not None:
        path: Path | None = Path(chosen) if chosen.strip() else None
        if path is not None and not path.is_file():
            raise SettingsError("FLOWGATE_DEV_ENV", "an existing file, or empty", chosen)
    else:
        path = find_dev_env()
    if path is None:
        return None
    values: Mapping[str, str] = read_env_file(path)
    for name, value in values.items():
        if not (env.get(name) or "").strip():
            env[name] = value
    get_settings.cache_clear()
    return path


SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")


def _smtp_url(name: str) -> str | None:
    """`smtp://host[:port]`, `smtp+starttls://[user@]host[:port]` or `smtps://…`; None if unset."""
    value = _raw(name)
    if value is None:
        return None
    expected = "an smtp://, smtp+starttls:// or smtps:// URL with a host"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - a port that is not a number raises ValueError here
    except ValueError:
        raise SettingsError(name, expected, value) from None
    if parts.scheme not in SMTP_SCHEMES or not parts.hostname or parts.password:
        # A password in the URL would be logged wherever the URL is: FLOWGATE_SMTP_PASSWORD.
        raise SettingsError(name, expected + " (the password in FLOWGATE_SMTP_PASSWORD)", value)
    return value


def _smtp_ca_file(name: str, smtp_url: str | None) -> str | None:
    """A PEM file of the CA certificates the SMTP server's certificate must chain to (instead
    of the system's), for an smtp+starttls:// or smtps:// FLOWGATE_SMTP_URL; None if unset."""
    value = _raw(name)
    if value is None:
        return None
    if smtp_url is not None and urlsplit(smtp_url).scheme == "smtp":
        raise SettingsError(
            name, "no CA file with a plain smtp:// FLOWGATE_SMTP_URL (nothing is encrypted: "
            "use smtp+starttls:// or smtps://)", value,
        )  # fmt: skip
    expected = "a readable PEM file of CA certificates"
    try:
        context = ssl.create_default_context(cafile=value)
    except (OSError, ValueError):  # missing, unreadable, a directory, not PEM (ssl.SSLError)
        raise SettingsError(name, expected, value) from None
    if not context.cert_store_stats()["x509"]:
        raise SettingsError(name, expected, value)
    return value


def _http_url(name: str, default: str) -> str:
    value = _raw(name)
    if value is None:
        return default
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(name, "an http:// or https:// URL", value)
    return value.rstrip("/")


def _email(name: str, default: str) -> str:
    value = _raw(name)
    if value is None:
        return default
    if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", value):
        raise SettingsError(name, "an email address (name@example.com)", value)
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    port: int
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (web.forwarded).
    forwarded_allow_ips: tuple[str, ...]
    # Input limits: public-api.md, "CSV data is automatically truncated to 100 rows maximum".
    max_rows: int
    max_body_bytes: int
    # How long the answer to a request sent with an Idempotency-Key is kept for its replays.
    idempotency_ttl_seconds: int
    # Retention (web.domain.retention): executions that ended longer ago than this lose their
    # personal data (row input, messages, phone numbers, webhook bodies); their summary stays.
    retention_days: int
    # How long audit entries are kept before the daily retention purge (web.domain.audit).
    audit_retention_days: int
    # GET /executions/:id/events: a `: keep-alive` comment after this long without an event.
    sse_keep_alive_seconds: float
    # Worker: arq job timeout (a run's steps stop taking rows at half of it and go on in a new
    # job), and how long a worker's claim on an execution lasts without its heartbeat.
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
    # How many deliveries one worker process sends at once (their own arq loop and queue).
    webhook_concurrency: int
    # Provider URLs (base_url, url) on private or loopback addresses: Ollama on localhost...
    provider_allow_private: bool
    # How long a process may reuse an API key lookup (revocation takes effect within this).
    key_cache_seconds: float
    # Reconciler: unfinished work nobody holds, untouched this long and with no job waiting in
    # Redis, is queued again; each worker looks every reconcile_interval (with jitter).
    stalled_after_seconds: float
    reconcile_interval_seconds: float
    # Dashboard: signs CSRF tokens; every web process of a deployment needs the same value.
    secret_key: str
    cookie_secure: bool
    # A dashboard sign-in lasts this long from the moment it was made, however active.
    session_max_age_seconds: int
    # Sign-in attempts one client IP may make a minute before its 429s (any email, any result).
    sign_in_attempts_per_minute: int
    # Reviewer notifications (web.domain.notifications): the SMTP server as a URL
    # (`smtp://host:25`, `smtp+starttls://user@host:587`, `smtps://user@host:465`; None: no
    # email), its password, the From address, the dashboard's public base URL for the review
    # link, and the delays between the attempts of a notification that failed. With TLS, the
    # server's certificate is checked against the system's CAs, or only those of smtp_ca_file.
    smtp_url: str | None = None
    smtp_password: str | None = None
    smtp_ca_file: str | None = None
    smtp_from: str = "flowgate@localhost"
    public_url: str = "http://localhost:3001"
    notification_retry_delays: tuple[float, ...] = (5.0, 30.0, 120.0)
    notification_timeout_seconds: float = 10.0
    # WhatsApp Cloud API webhooks (/webhooks/whatsapp): the verify token of Meta's handshake and
    # the app secret that signs each notification; without them the endpoint refuses.
    whatsapp_verify_token: str | None = None
    whatsapp_app_secret: str | None = None
    # Inbound texts that add the sender to the suppression list, or take it off again.
    opt_out_keywords: tuple[str, ...] = ("STOP", "UNSUBSCRIBE")
    opt_in_keywords: tuple[str, ...] = ("START",)
    # `execution.delivery_updated` goes out at most once per this many seconds per execution.
    delivery_webhook_interval_seconds: float = 60.0
    # Metrics (web.domain.metrics): the bearer token /metrics and the workers' endpoints want
    # (None: no endpoint, 404); the port and address of each worker's endpoint (None: none);
    # where `flowgate serve` keeps its processes' values (None: a new temporary directory).
    metrics_token: str | None = None
    worker_metrics_port: int | None = None
    worker_metrics_host: str = "127.0.0.1"
    metrics_dir: str | None = None
    # Provider limits shared by every worker (requestsPerMinute, tokensPerMinute,
    # messagesPerSecond): false switches the shared bucket off (benchmarks compare).
    provider_limits_enabled: bool = True
    # Tests only: a worker's clock (web.domain.clock) runs this far ahead of the wall clock.
    clock_offset_seconds: float = 0.0


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    smtp_url = _smtp_url("FLOWGATE_SMTP_URL")
    return Settings(
        database_url=_str("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/flowgate"),
        redis_url=_str("REDIS_URL", "redis://127.0.0.1:6379/0"),
        port=_int("FLOWGATE_PORT", 3001, minimum=1, maximum=65535),
        forwarded_allow_ips=_proxies("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        max_rows=_int("FLOWGATE_MAX_ROWS", 100, minimum=1),
        max_body_bytes=_int("FLOWGATE_MAX_BODY_BYTES", 1024 * 1024, minimum=1),
        idempotency_ttl_seconds=_int("FLOWGATE_IDEMPOTENCY_TTL_SECONDS", 86_400, minimum=1),
        audit_retention_days=_int("FLOWGATE_AUDIT_RETENTION_DAYS", 2555, minimum=1, maximum=36_500),
        sse_keep_alive_seconds=_float("FLOWGATE_SSE_KEEP_ALIVE_SECONDS", 15.0, minimum=0.1),
        job_timeout_seconds=_int("FLOWGATE_JOB_TIMEOUT_SECONDS", 300, minimum=1),
        execution_lease_seconds=_float("FLOWGATE_EXECUTION_LEASE_SECONDS", 8.0, minimum=0.1),
        sandbox_send_delay_seconds=_float("FLOWGATE_SANDBOX_SEND_DELAY_SECONDS", 0.0),
        log_level=_choice("FLOWGATE_LOG_LEVEL", "INFO", LOG_LEVELS),
        rate_limit_enabled=_bool("FLOWGATE_RATE_LIMIT_ENABLED", True),
        rate_limit_burst=_int("FLOWGATE_RATE_LIMIT_BURST", 10),
        rate_limit_refill_per_second=_float("FLOWGATE_RATE_LIMIT_REFILL_PER_SECOND", 1.0),
        auth_failures_per_minute=_int("FLOWGATE_AUTH_FAILURES_PER_MINUTE", 20),
        redis_timeout_seconds=_float("FLOWGATE_REDIS_TIMEOUT_SECONDS", 0.5),
        webhook_timeout_seconds=_float("FLOWGATE_WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.001),
        webhook_retry_delays=_floats("FLOWGATE_WEBHOOK_RETRY_DELAYS", (1.0, 5.0, 15.0)),
        webhook_allow_http=_bool("FLOWGATE_WEBHOOK_ALLOW_HTTP", False),
        webhook_allow_private=_bool("FLOWGATE_WEBHOOK_ALLOW_PRIVATE", False),
        webhook_concurrency=_int("FLOWGATE_WEBHOOK_CONCURRENCY", 20, minimum=1, maximum=1000),
        provider_allow_private=_bool(
            "FLOWGATE_PROVIDER_ALLOW_PRIVATE", _bool("FLOWGATE_WEBHOOK_ALLOW_PRIVATE", False)
        ),
        key_cache_seconds=_float("FLOWGATE_KEY_CACHE_SECONDS", 5.0),
        stalled_after_seconds=_float("FLOWGATE_STALLED_AFTER_SECONDS", 5.0),
        reconcile_interval_seconds=_float("FLOWGATE_RECONCILE_INTERVAL_SECONDS", 5.0, minimum=0.1),
        secret_key=_secret_key(),
        cookie_secure=_bool("FLOWGATE_COOKIE_SECURE", False),
        session_max_age_seconds=_int("FLOWGATE_SESSION_MAX_AGE_SECONDS", 12 * 3600, minimum=1),
        sign_in_attempts_per_minute=_int("FLOWGATE_SIGN_IN_ATTEMPTS_PER_MINUTE", 30, minimum=1),
        smtp_url=smtp_url,
        smtp_password=_raw("FLOWGATE_SMTP_PASSWORD"),
        smtp_ca_file=_smtp_ca_file("FLOWGATE_SMTP_CA_FILE", smtp_url),
        smtp_from=_email("FLOWGATE_SMTP_FROM", "flowgate@localhost"),
        public_url=_http_url("FLOWGATE_PUBLIC_URL", "http://localhost:3001"),
        notification_retry_delays=_floats("FLOWGATE_NOTIFICATION_RETRY_DELAYS", (5.0, 30.0, 120.0)),
        notification_timeout_seconds=_float(
            "FLOWGATE_NOTIFICATION_TIMEOUT_SECONDS", 10.0, minimum=0.001
        ),
        whatsapp_verify_token=_raw("FLOWGATE_WHATSAPP_VERIFY_TOKEN"),
        whatsapp_app_secret=_raw("FLOWGATE_WHATSAPP_APP_SECRET"),
        opt_out_keywords=_keywords("FLOWGATE_OPT_OUT_KEYWORDS", ("STOP", "UNSUBSCRIBE")),
        opt_in_keywords=_keywords("FLOWGATE_OPT_IN_KEYWORDS", ("START",)),
        delivery_webhook_interval_seconds=_float(
            "FLOWGATE_DELIVERY_WEBHOOK_INTERVAL_SECONDS", 60.0, minimum=0.1
        ),
        metrics_token=_raw("FLOWGATE_METRICS_TOKEN"),
        worker_metrics_port=_optional_port("FLOWGATE_WORKER_METRICS_PORT"),
        worker_metrics_host=_host("FLOWGATE_WORKER_METRICS_HOST", "127.0.0.1"),
        metrics_dir=_raw("FLOWGATE_METRICS_DIR"),
        provider_limits_enabled=_bool("FLOWGATE_PROVIDER_LIMITS_ENABLED", True),
        clock_offset_seconds=_float("FLOWGATE_CLOCK_OFFSET_SECONDS", 0.0, minimum=-1e10),
        retention_days=_int("FLOWGATE_RETENTION_DAYS", 90, minimum=1, maximum=36_500),
    )
