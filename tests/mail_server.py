"""A real SMTP server on 127.0.0.1 (aiosmtpd, random port) that keeps what it receives, for the
tests of reviewer notifications (as tests/receiver.py is for webhooks): plain, STARTTLS or
implicit TLS (smtps), with AUTH, and throwaway certificates made by the openssl command."""

from __future__ import annotations

import asyncio
import email
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Inbox:
    """aiosmtpd's handler: keeps every message; answers the first `fail` DATA with 451."""

    def __init__(self, fail: int = 0) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.fail = fail
        self.refused = 0
        # With AUTH: each message's authenticated user (None: none) and whether it came over TLS.
        self.senders: list[tuple[str | None, bool]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refused < self.fail:
            self.refused += 1
            return "451 4.3.0 Mailbox busy, try again later"
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        user = session.auth_data if session.authenticated else None
        self.senders.append((user, server.transport.get_extra_info("ssl_object") is not None))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for _, message in self.messages]

    async def wait_for(self, count: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{len(self.messages)} of {count} emails"
            await asyncio.sleep(0.02)


@contextmanager
def serving(inbox: Inbox) -> Iterator[str]:
    """A plain SMTP server for `inbox` while in the block: its `smtp://` URL."""
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


class Accounts:
    """aiosmtpd's authenticator: one user and password; keeps every attempt (mechanism, user,
    password) so a test can say which credentials the client sent."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password
        self.attempts: list[tuple[str, str, str]] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        self.attempts.append((mechanism, user, password))
        ok = (user, password) == (self.user, self.password)
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)


@dataclass(frozen=True)
class Certificates:
    """PEM files: a CA, and a server certificate for 127.0.0.1 (its IP in subjectAltName) with
    its key, signed by that CA."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def _openssl(*args: str | Path) -> None:
    subprocess.run(["/usr/bin/openssl", *map(str, args)], check=True, capture_output=True)


def make_certificates(folder: Path, name: str = "Flowgate test CA") -> Certificates:
    """A throwaway CA (EC P-256, two days) and a server certificate for 127.0.0.1 it signed."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, request = folder / "server.pem", folder / "server.key", folder / "server.csr"
    extensions = folder / "server.ext"
    extensions.write_text(
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
    )
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj",
             f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    _openssl("req", "-new", *ec, "-keyout", key, "-out", request, "-subj", "/CN=127.0.0.1")
    _openssl("x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-set_serial", "2",
             "-days", "2", "-extfile", extensions, "-out", cert)  # fmt: skip
    return Certificates(ca, cert, key)


@contextmanager
def serving_tls(
    inbox: Inbox, accounts: Accounts, certificates: Certificates, *, implicit: bool
) -> Iterator[str]:
    """An SMTP server with AUTH for `inbox` while in the block, and its URL (user included):
    `smtp+starttls://` requiring STARTTLS before anything else, or `smtps://` (TLS from the
    first byte) with `implicit`."""
    port = free_port()
    context = certificates.server_context()
    if implicit:
        # aiosmtpd counts only STARTTLS as TLS (auth_require_tls, auth_required); here all of
        # it is TLS, and Inbox.senders shows who authenticated.
        tls: dict[str, Any] = {"ssl_context": context, "auth_require_tls": False}
    else:
        tls = {"tls_context": context, "require_starttls": True, "auth_required": True}
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=accounts, **tls)
    controller.start()
    try:
        scheme = "smtps" if implicit else "smtp+starttls"
        yield f"{scheme}://{accounts.user}@127.0.0.1:{port}"
    finally:
        controller.stop()
