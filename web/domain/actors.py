"""Who does something: a dashboard user, an API key, the CLI or the system. Every use case that
changes something takes an `Actor`, and web.domain.audit records it. Imports nothing of flowgate.

Handlers build the actor (the dashboard from the signed-in user, the public API from its key,
the CLI for itself); the use case never guesses who called it.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Self

# What a web request's user agent may take in an audit entry: enough to recognise a browser.
USER_AGENT_LIMIT = 500
EMAIL_LIMIT = 320  # audit_entry.actor


class ActorType(StrEnum):
    USER = "user"
    API_KEY = "api_key"
    CLI = "cli"
    SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    """`name` is what the audit trail shows (a user's email, `key:<prefix>`, `cli`, `system`);
    `id` the user's or key's id (the CLI: the operating-system user); `decided_by` what the
    decided_by columns of executions and rows have always held (the email, or
    `api_key:<name>`)."""

    type: ActorType
    name: str
    id: str | None = None
    decided_by: str = ""
    ip: str | None = None
    user_agent: str | None = None

    @classmethod
    def user(
        cls, user_id: object | None, email: str, *, ip: str | None = None, user_agent: str | None
    ) -> Self:
        email = email[:EMAIL_LIMIT]  # as typed at a failed sign-in: anything
        return cls(
            ActorType.USER,
            email,
            None if user_id is None else str(user_id),
            email,
            ip,
            _clip(user_agent),
        )

    @classmethod
    def api_key(
        cls,
        key_id: object,
        prefix: str,
        key_name: str,
        *,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> Self:
        return cls(
            ActorType.API_KEY,
            f"key:{prefix}",
            str(key_id),
            f"api_key:{key_name}",
            ip,
            _clip(user_agent),
        )

    @classmethod
    def cli(cls) -> Self:
        try:
            who: str | None = getpass.getuser()
        except (KeyError, OSError):  # no name for this uid (a bare container)
            who = None
        return cls(ActorType.CLI, "cli", who, "cli")

    @classmethod
    def system(cls) -> Self:
        """The platform itself: a deadline, a purge, a worker's own decision."""
        return cls(ActorType.SYSTEM, "system", None, "system")

    def without_request(self) -> Self:
        return replace(self, ip=None, user_agent=None)


def _clip(user_agent: str | None) -> str | None:
    if not user_agent:
        return None
    return user_agent.replace("\x00", "")[:USER_AGENT_LIMIT]
