"""Sends one reviewer notification (web.domain.notifications builds it): an email over SMTP
with aiosmtplib, or a Slack-compatible incoming webhook (`{"text": …}`) through the checked
outbound client. Runs on the deliveries' queue and loop, so a mail server that is slow or down
only ever costs this job: each attempt has one deadline (FLOWGATE_NOTIFICATION_TIMEOUT_SECONDS),
failed attempts are retried after FLOWGATE_NOTIFICATION_RETRY_DELAYS, and the run never waits.
Nothing here logs a recipient, a name or the message.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import unquote, urlsplit
from uuid import UUID

import aiosmtplib
import httpx

from web.domain import notifications, webhooks
from web.domain.notifications import Channel, ToSend
from web.settings import Settings
from worker import outbound

_DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


@dataclass(frozen=True)
class NotifyOutcome:
    state: str
    retry_in: float | None = None


def build_email(n: ToSend, settings: Settings) -> EmailMessage:
    """The email of a notification: plain text with an HTML alternative."""
    message = notifications.compose(n, settings.public_url)
    email = EmailMessage()
    email["From"] = settings.smtp_from
    email["To"] = n.recipient
    email["Subject"] = message.subject
    email["Message-ID"] = make_msgid(domain=settings.smtp_from.rpartition("@")[2] or None)
    email["X-Flowgate-Execution-Id"] = str(n.execution)
    email["X-Flowgate-Notification"] = n.kind
    email.set_content(message.text)
    email.add_alternative(message.html, subtype="html")
    return email


async def _send_email(n: ToSend, settings: Settings) -> str | None:
    if not settings.smtp_url:
        return "FLOWGATE_SMTP_URL is not set"
    parts = urlsplit(settings.smtp_url)
    try:
        # With TLS the server's certificate is checked (name and chain) against the system's
        # CAs (aiosmtplib's default context), or only those of FLOWGATE_SMTP_CA_FILE (a bank's
        # internal relay, its internal CA): read each attempt, so a replaced file counts
        # without a restart; off the event loop, as aiosmtplib loads its own.
        tls = None
        if settings.smtp_ca_file and parts.scheme != "smtp":
            tls = await asyncio.to_thread(ssl.create_default_context, cafile=settings.smtp_ca_file)
        async with asyncio.timeout(settings.notification_timeout_seconds):
            await aiosmtplib.send(
                build_email(n, settings),
                hostname=parts.hostname,
                port=parts.port or _DEFAULT_PORTS[parts.scheme],
                username=unquote(parts.username) if parts.username else None,
                password=settings.smtp_password if parts.username else None,
                use_tls=parts.scheme == "smtps",
                start_tls=parts.scheme == "smtp+starttls",
                tls_context=tls,
                timeout=settings.notification_timeout_seconds,
            )
    except TimeoutError:
        return f"Timed out after {settings.notification_timeout_seconds:g} s"
    except aiosmtplib.SMTPResponseException as exc:
        return f"SMTP {exc.code}: {exc.message}"
    except (aiosmtplib.SMTPException, OSError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


async def _send_slack(http: httpx.AsyncClient, n: ToSend, settings: Settings) -> str | None:
    try:
        url = webhooks.check_url(
            n.recipient,
            allow_http=settings.webhook_allow_http,
            allow_private=settings.webhook_allow_private,
        )
    except Exception as exc:  # InvalidInput: the URL does not pass the rules (any more)
        return f"Refused: {exc}"
    deadline = settings.notification_timeout_seconds
    try:
        async with asyncio.timeout(deadline):
            response = await http.post(
                url,
                json={"text": notifications.slack_text(n, settings.public_url)},
                headers={"User-Agent": webhooks.USER_AGENT},
                timeout=deadline,
                follow_redirects=False,
            )
    except (TimeoutError, httpx.TimeoutException):
        return f"Timed out after {deadline:g} s"
    except outbound.AddressRefused as exc:
        return f"Refused: {exc}"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if not 200 <= response.status_code < 300:
        return f"HTTP {response.status_code}"
    return None


async def send(http: httpx.AsyncClient, notification_id: UUID, settings: Settings) -> NotifyOutcome:
    """One attempt at a notification. Attempts 1..n+1 follow notification_retry_delays (n of
    them); after the last it is given up as failed."""
    n = await notifications.load(notification_id)
    if n is None or n.status != "pending":
        return NotifyOutcome("nothing to do")
    started = time.monotonic()
    if n.channel == Channel.EMAIL:
        error = await _send_email(n, settings)
    else:
        error = await _send_slack(http, n, settings)
    elapsed = int((time.monotonic() - started) * 1000)
    delays = settings.notification_retry_delays
    attempt = n.attempts + 1
    final = error is None or attempt > len(delays)
    await notifications.record_attempt(n, error, elapsed, final=final)
    if error is None:
        return NotifyOutcome("sent")
    if final:
        return NotifyOutcome("failed")
    return NotifyOutcome("retry", retry_in=delays[attempt - 1])
