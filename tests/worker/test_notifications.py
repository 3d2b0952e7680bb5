"""Reviewer notifications (issue 15, section 4): email through a real SMTP server on 127.0.0.1
(aiosmtpd) and a Slack-compatible webhook (tests/receiver.py) when an execution starts waiting,
`remindBefore` its deadline and when it timed out; retries, the log, and a dead mail server
that never delays the run. Real server, arq workers, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import json
import logging
import socket
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any
from uuid import UUID

import httpx
import pytest

from tests import mail_server
from tests.factories import PUBLIC, auth, execution_row, rows, start
from tests.mail_server import Inbox
from tests.receiver import Receiver
from web.domain import clock, users
from web.domain.actors import Actor
from web.domain.tables import Notification, NotificationAttempt, SandboxMessage, User
from web.domain.workflows import BFSI_TEMPLATE, save_workflow
from web.settings import Settings, get_settings

SYSTEM = Actor.system()  # who creates the approvers here (the audit trail's actor)

WORKFLOW_ID = "workflow_notified"
PUBLIC_URL = "https://flowgate.bank.example"
SENDER = "approvals@bank.example"


def _smtp(inbox: Inbox) -> Iterator[tuple[Inbox, str]]:
    with mail_server.serving(inbox) as url:
        yield inbox, url


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, str]]:
    yield from _smtp(Inbox())


@pytest.fixture
def flaky_smtp() -> Iterator[tuple[Inbox, str]]:
    yield from _smtp(Inbox(fail=2))


def _settings(smtp_url: str, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "smtp_url": smtp_url,
        "smtp_from": SENDER,
        "public_url": PUBLIC_URL,
        "notification_retry_delays": (0.1, 0.2, 0.3),
        "notification_timeout_seconds": 5.0,
    }
    return dataclasses.replace(get_settings(), **{**values, **changes})


async def _workflow(**approval: Any) -> None:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["id"] = WORKFLOW_ID
    definition["name"] = "Diwali card offers"
    for step in definition["steps"]:
        if step["type"] == "approval":
            step["settings"].update(approval)
    await save_workflow(definition)


async def _approvers() -> None:
    await users.create_user("lead@example.com", "a long password 1", "admin", actor=SYSTEM)
    await users.create_user(
        "checker@example.com", "a long password 2", "reviewer", actor=Actor.system()
    )
    await users.create_user(
        "gone@example.com", "a long password 3", "reviewer", actor=Actor.system()
    )
    await User.update({User.active: False}).where(User.email == "gone@example.com")


def _parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


async def test_approvers_are_told_by_email_and_slack_when_waiting_reminded_and_timed_out(
    client: httpx.AsyncClient,
    smtp: tuple[Inbox, str],
    receiver: Receiver,
    run_worker: Any,
    api_key: str,
    admin_client: httpx.AsyncClient,
) -> None:
    inbox, url = smtp
    await _approvers()
    await _workflow(
        timeout="3s", remindBefore="2s", notifications={"slackWebhookUrl": receiver.url}
    )
    data = rows(3)
    data[2]["phone"] = "555"  # fails compliance
    execution_id = await start(client, api_key, workflow_id=WORKFLOW_ID, csv_data=data)

    await run_worker(_settings(url))  # until the deadline job (3 s) and its notifications ran

    await inbox.wait_for(9)  # waiting, reminder and timed out, to each of 3 approvers
    stored = await execution_row(execution_id)
    deadline = clock.iso(stored["approval_deadline"])
    link = f"{PUBLIC_URL}/dashboard/approvals/{execution_id}"
    by_subject: dict[str, list[list[str]]] = {}
    for recipients, message in inbox.messages:
        by_subject.setdefault(str(message["Subject"]), []).append(recipients)
        assert message["From"] == SENDER
        assert [str(message["To"])] == recipients
        assert message["X-Flowgate-Execution-Id"] == execution_id
        text, html = _parts(message)
        assert "Workflow: Diwali card offers (workflow_notified)" in text
        assert "Rows: 3" in text and "Failing compliance: 1" in text
        assert f"Deadline: {deadline}" in text and f"Review: {link}" in text
        assert f'<a href="{link}">Open the review screen</a>' in html
        assert "<th align='left'>Failing compliance</th><td>1</td>" in html
    everyone = [["admin@example.com"], ["checker@example.com"], ["lead@example.com"]]
    assert {subject: sorted(to) for subject, to in by_subject.items()} == {
        "Approval needed: Diwali card offers": everyone,
        f"Reminder: approval due {deadline}: Diwali card offers": everyone,
        "Approval timed out: Diwali card offers": everyone,
    }
    timed_out_text = _parts(next(m for _, m in inbox.messages if "timed out" in str(m["Subject"])))[
        0
    ]
    assert "was cancelled: Approval timed out after 3s." in timed_out_text
    slack = [r for r in receiver.requests if r.path == "/hooks"]
    texts = [json.loads(r.body)["text"] for r in slack]
    assert [t.split("\n")[0] for t in texts] == [
        "Approval needed: Diwali card offers",
        f"Reminder: approval due {deadline}: Diwali card offers",
        "Approval timed out: Diwali card offers",
    ]
    assert all(f"Review: {link}" in t and "Rows: 3" in t for t in texts)
    assert slack[0].headers["content-type"] == "application/json"
    sent = await Notification.select(Notification.status).where(
        Notification.execution == UUID(execution_id)
    )
    assert [n["status"] for n in sent] == ["sent"] * 12
    page = (await admin_client.get(f"/dashboard/executions/{execution_id}")).text
    assert "Reviewer notifications" in page
    assert page.count('<tr class="notification">') == 12
    assert "Slack webhook" in page and receiver.url not in page  # the URL is a secret


async def test_only_members_of_the_approver_groups_are_emailed(
    client: httpx.AsyncClient, smtp: tuple[Inbox, str], run_worker: Any, api_key: str
) -> None:
    inbox, url = smtp
    await _approvers()
    await users.create_user(
        "risk@example.com", "a long password 4", "reviewer", actor=Actor.system()
    )
    await User.update({User.groups: ["risk"]}).where(User.email == "risk@example.com")
    await _workflow(approverGroups=["risk"])
    await start(client, api_key, workflow_id=WORKFLOW_ID, csv_data=rows(1))

    await run_worker(_settings(url))

    await inbox.wait_for(1)
    assert [to for to, _ in inbox.messages] == [["risk@example.com"]]


async def test_a_failing_mail_server_is_retried_until_it_takes_the_message(
    client: httpx.AsyncClient, flaky_smtp: tuple[Inbox, str], run_worker: Any, api_key: str
) -> None:
    inbox, url = flaky_smtp
    await users.create_user(
        "checker@example.com", "a long password 2", "reviewer", actor=Actor.system()
    )
    await _workflow()
    execution_id = await start(client, api_key, workflow_id=WORKFLOW_ID, csv_data=rows(1))

    await run_worker(_settings(url))

    await inbox.wait_for(1)
    assert len(inbox.messages) == 1
    note = await Notification.select().where(Notification.execution == UUID(execution_id)).first()
    assert note is not None
    assert (note["status"], note["attempts"], note["kind"]) == ("sent", 3, "waiting")
    attempts = (
        await NotificationAttempt.select(NotificationAttempt.error)
        .where(NotificationAttempt.notification == note["id"])
        .order_by(NotificationAttempt.attempt_number)
    )
    assert [a["error"] for a in attempts] == [
        "SMTP 451: 4.3.0 Mailbox busy, try again later",
        "SMTP 451: 4.3.0 Mailbox busy, try again later",
        None,
    ]


async def test_a_dead_mail_server_never_delays_or_fails_the_run(
    client: httpx.AsyncClient, run_worker: Any, api_key: str
) -> None:
    await users.create_user(
        "checker@example.com", "a long password 2", "reviewer", actor=Actor.system()
    )
    await _workflow()
    silent = socket.socket()  # accepts connections and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    url = f"smtp://127.0.0.1:{silent.getsockname()[1]}"
    settings = _settings(url, notification_timeout_seconds=2.0, notification_retry_delays=(0.1,))
    try:
        started = time.monotonic()
        execution_id = await start(client, api_key, workflow_id=WORKFLOW_ID, csv_data=rows(3))
        worker = asyncio.create_task(run_worker(settings))
        while (await execution_row(execution_id))["status"] != "pending_approval":
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.02)
        waited = time.monotonic() - started
        approved = await client.post(
            f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(api_key)
        )
        assert approved.status_code == 200
        while (await execution_row(execution_id))["status"] != "completed":
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.02)
        done = time.monotonic() - started
        await worker
    finally:
        silent.close()

    print(f"\ndead SMTP: pending_approval after {waited:.2f} s, completed after {done:.2f} s")
    assert waited < 2.0  # one attempt alone hangs 2 s: the run never waited for it
    assert await SandboxMessage.count() == 3
    note = await Notification.select().where(Notification.execution == UUID(execution_id)).first()
    assert note is not None and (note["status"], note["attempts"]) == ("failed", 2)
    errors = await NotificationAttempt.select(NotificationAttempt.error).where(
        NotificationAttempt.notification == note["id"]
    )
    assert [e["error"] for e in errors] == ["Timed out after 2 s"] * 2


# --- TLS and AUTH: smtp+starttls:// and smtps:// ---------------------------------------------

PASSWORD = "correct horse battery staple"
TLS_MODES = pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "smtps"])


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> mail_server.Certificates:
    """The mail relay's: a CA of its own (as a bank's internal one) and its certificate."""
    return mail_server.make_certificates(tmp_path_factory.mktemp("relay"))


@pytest.fixture(scope="module")
def another_ca(tmp_path_factory: pytest.TempPathFactory) -> mail_server.Certificates:
    return mail_server.make_certificates(tmp_path_factory.mktemp("other"), name="Another CA")


async def _notify_one(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, settings: Settings
) -> tuple[str, int, list[str | None]]:
    """One approver told that one execution waits: its notification's status, attempts and
    the error of each attempt."""
    await users.create_user(
        "checker@example.com", "a long password 2", "reviewer", actor=Actor.system()
    )
    await _workflow()
    execution_id = await start(client, api_key, workflow_id=WORKFLOW_ID, csv_data=rows(1))
    await run_worker(settings)
    note = await Notification.select().where(Notification.execution == UUID(execution_id)).first()
    assert note is not None
    attempts = (
        await NotificationAttempt.select(NotificationAttempt.error)
        .where(NotificationAttempt.notification == note["id"])
        .order_by(NotificationAttempt.attempt_number)
    )
    return note["status"], note["attempts"], [a["error"] for a in attempts]


@TLS_MODES
async def test_email_goes_over_tls_as_the_urls_user_with_the_password_setting(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    certificates: mail_server.Certificates,
    implicit: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox, accounts = Inbox(), mail_server.Accounts("mailer", PASSWORD)
    caplog.set_level(logging.DEBUG)
    with mail_server.serving_tls(inbox, accounts, certificates, implicit=implicit) as url:
        settings = _settings(url, smtp_password=PASSWORD, smtp_ca_file=str(certificates.ca))
        outcome = await _notify_one(client, api_key, run_worker, settings)

    assert url.startswith("smtps://mailer@" if implicit else "smtp+starttls://mailer@")
    assert outcome == ("sent", 1, [None])
    assert [to for to, _ in inbox.messages] == [["checker@example.com"]]
    assert inbox.senders == [("mailer", True)]  # authenticated, over TLS
    assert [(user, password) for _, user, password in accounts.attempts] == [("mailer", PASSWORD)]
    # Nothing of ours logs the password, even at DEBUG (mail.log is the test server's own).
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail."))
    assert "arq.worker" in {r.name for r in caplog.records}
    assert PASSWORD not in ours
    assert base64.b64encode(f"\0mailer\0{PASSWORD}".encode()).decode() not in ours


@TLS_MODES
async def test_a_wrong_password_is_a_failed_attempt_each_time(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    certificates: mail_server.Certificates,
    implicit: bool,
) -> None:
    inbox, accounts = Inbox(), mail_server.Accounts("mailer", PASSWORD)
    with mail_server.serving_tls(inbox, accounts, certificates, implicit=implicit) as url:
        settings = _settings(
            url,
            smtp_password="not the password",
            smtp_ca_file=str(certificates.ca),
            notification_retry_delays=(0.1,),
        )
        started = time.monotonic()
        outcome = await _notify_one(client, api_key, run_worker, settings)
        took = time.monotonic() - started

    assert outcome == ("failed", 2, ["SMTP 535: 5.7.8 Authentication credentials invalid"] * 2)
    assert took < 10
    assert inbox.messages == []
    # Each attempt tries every mechanism both offer (PLAIN, then LOGIN), all refused.
    assert (
        accounts.attempts
        == [(mechanism, "mailer", "not the password") for mechanism in ("PLAIN", "LOGIN")] * 2
    )


@TLS_MODES
@pytest.mark.parametrize("trusting", ["the system's CAs", "another CA"])
async def test_a_server_certificate_the_client_does_not_trust_is_a_failed_attempt(
    client: httpx.AsyncClient,
    api_key: str,
    run_worker: Any,
    certificates: mail_server.Certificates,
    another_ca: mail_server.Certificates,
    implicit: bool,
    trusting: str,
) -> None:
    inbox, accounts = Inbox(), mail_server.Accounts("mailer", PASSWORD)
    ca_file = str(another_ca.ca) if trusting == "another CA" else None
    with mail_server.serving_tls(inbox, accounts, certificates, implicit=implicit) as url:
        settings = _settings(
            url, smtp_password=PASSWORD, smtp_ca_file=ca_file, notification_retry_delays=(0.1,)
        )
        started = time.monotonic()
        status, attempts, errors = await _notify_one(client, api_key, run_worker, settings)
        took = time.monotonic() - started

    print(f"\nuntrusted certificate ({'smtps' if implicit else 'starttls'}): {errors[0]}")
    assert (status, attempts) == ("failed", 2)
    assert all(e is not None and "certificate verify failed" in e for e in errors), errors
    assert took < 10
    assert inbox.messages == []
    assert accounts.attempts == []  # the password never went to a server it could not verify


async def test_starttls_to_a_server_that_does_not_offer_it_fails_instead_of_sending_in_clear(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    inbox = Inbox()
    with mail_server.serving(inbox) as url:
        plain = url.replace("smtp://", "smtp+starttls://mailer@")
        settings = _settings(plain, smtp_password=PASSWORD, notification_retry_delays=(0.1,))
        outcome = await _notify_one(client, api_key, run_worker, settings)

    assert outcome == (
        "failed",
        2,
        ["SMTPException: SMTP STARTTLS extension not supported by server."] * 2,
    )
    assert inbox.messages == []
