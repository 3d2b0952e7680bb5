"""Who approves (a dashboard user with their groups, or an API key) and the one rule of which
executions they may see and decide: an approval step's `approverGroups`. The rule is written
twice only in form: `Approver.may_see` for one execution's parsed settings, `may_see_sql` for
the lists (the approvals queue, the executions list) and one execution's read, in SQL.
Imports only web.domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from web.domain.actors import Actor, ActorType
from web.domain.users import SignedInUser


@dataclass(frozen=True)
class Approver:
    """Who decides, or looks: a dashboard user (with their groups) or an API key (one
    approver, in no group), as the audit trail's `actor`. `key` tells approvers apart
    (`user:<id>`, `api_key:<id>`); `label` is what the rows and the execution record as
    decided_by / edited_by (an email, `api_key:<name>`)."""

    actor: Actor
    groups: tuple[str, ...] = ()
    is_admin: bool = False

    @classmethod
    def user(cls, user: SignedInUser, actor: Actor) -> Approver:
        return cls(actor, tuple(user.groups), user.is_admin)

    @classmethod
    def api_key(cls, actor: Actor) -> Approver:
        return cls(actor)

    @property
    def key(self) -> str:
        return f"{self.actor.type}:{self.actor.id}"

    @property
    def label(self) -> str:
        return self.actor.decided_by

    @property
    def is_api_key(self) -> bool:
        return self.actor.type is ActorType.API_KEY

    def may_see(self, approver_groups: Sequence[str]) -> bool:
        """Whether this approver sees and decides an execution whose approval step names
        `approver_groups`: admins always, everyone when it names none, else its members."""
        if not approver_groups or self.is_admin:
            return True
        return bool(set(self.groups) & set(approver_groups))


def may_see_sql(groups: str, definition: str = "definition") -> str:
    """`Approver.may_see` for a non-admin as an SQL condition on an execution's `definition`
    (a column), `groups` the placeholder of the approver's groups as text[] (`$3`, or `{}`
    for Piccolo). True when the approval step names no groups (or there is none), or one of
    them. Admins see everything: callers leave the condition out (or OR it with is_admin)."""
    return (
        "(SELECT g IS NULL OR jsonb_typeof(g) <> 'array' OR jsonb_array_length(g) = 0 "  # noqa: S608
        f"OR g ?| {groups}::text[] FROM jsonb_path_query_first({definition}, "
        "'$.steps[*] ? (@.type == \"approval\").settings.approverGroups') AS g)"
    )
