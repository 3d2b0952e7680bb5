"""A real SMTP server on 127.0.0.1 (aiosmtpd, random port) that keeps what it receives, for the
tests of reviewer notifications (as tests/receiver.py is for webhooks)."""

from __future__ import annotations

import asyncio
import email
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller


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

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refused < self.fail:
            self.refused += 1
            return "451 4.3.0 Mailbox busy, try again later"
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
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
