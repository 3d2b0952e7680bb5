"""The audit trail: one append-only, hash-chained table (`audit_entry`) of every decision and
administrative act, written by `record()` inside the transaction of the change it records;
reads with filters, `verify()` of the chain, and the retention purge. Imports only web.domain.

The chain: each entry's `hash` is the SHA-256 of a canonical encoding (JSON, sorted keys, no
spaces) of its fields and of `prev_hash`, the hash of the entry before it (64 zeros for the
first). Appends are serialised by one row, `audit_head` (id 1), locked FOR UPDATE by every
`record()` until its transaction ends: the next writer waits, then reads the head as the first
one committed it, so the chain never forks and ids are gapless. A row lock rather than
`pg_advisory_xact_lock`: the lock and the previous hash are the same row, read by the same
statement (an advisory lock taken in one statement would leave the previous hash to another,
and a subquery beside the lock would read it from before the wait).

`record()` must be the last statement of its transaction that takes a lock: the head is then
always taken last, so two audited transactions can never deadlock over it, and it is held
only for the commit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from uuid import UUID

import msgspec

from web.domain import clock, pool
from web.domain.actors import Actor, ActorType
from web.domain.types import ReadModel, from_row

GENESIS = "0" * 64
MAX_ID = 2**63 - 1  # audit_entry.id is a bigint
# Issue 15's actions. A bulk decision is one `row.approved`/`row.rejected` entry whose target
# is the execution. `execution.timed_out` is written by the approval deadline, with
# Actor.system(), in the transaction that cancels the execution:
#     await audit.record(Actor.system(), "execution.timed_out", "execution", execution_id,
#                        execution_id=execution_id, before=..., after=..., comment=error)
ACTIONS = (
    "row.approved",
    "row.rejected",
    "row.undecided",
    "row.edited",
    "execution.approved",
    "execution.rejected",
    "execution.cancelled",
    "execution.timed_out",
    "key.created",
    "key.updated",
    "key.rotated",
    "key.revoked",
    "webhook.redelivered",
    "workflow.imported",
    "workflow.activated",
    "workflow.deactivated",
    "user.invited",
    "user.role_changed",
    "user.groups_changed",
    "user.deactivated",
    "user.reactivated",
    "signin.succeeded",
    "signin.failed",
    "signin.locked",
)
# What a reviewer may see of the trail: their own decisions.
DECISION_ACTIONS = tuple(a for a in ACTIONS if a.split(".")[0] in ("row", "execution"))

_INSERT = (
    "WITH entry AS ("
    "  INSERT INTO audit_entry (id, at, actor_type, actor, actor_id, action, target_type, "
    "    target_id, execution_id, before, after, comment, ip, user_agent, prev_hash, hash) "
    "  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb, $12, $13, $14, "
    "    $15, $16) RETURNING id, hash) "
    "UPDATE audit_head SET seq = entry.id, hash = entry.hash FROM entry WHERE audit_head.id = 1"
)


class NotInTransaction(RuntimeError):
    """record() was called outside a transaction: the entry and its change could diverge."""


def _plain(value: Any) -> Any:
    """`value` as plain JSON types (datetimes as ISO text, UUIDs as text), as it is stored."""
    if value is None:
        return None
    return json.loads(msgspec.json.encode(value))


def _json_text(value: Any) -> str | None:
    return None if value is None else json_text(value)


def json_text(value: Any) -> str:
    """A before/after value as text (the CSV export's cells)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _at(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The encoding the hash is taken over: sorted keys, compact separators, UTF-8."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class AuditEntryView(ReadModel, frozen=True):
    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("before", "after")

    id: int
    at: datetime
    actor_type: ActorType
    actor: str
    actor_id: str | None
    action: str
    target_type: str | None
    target_id: str | None
    execution_id: UUID | None
    before: Any
    after: Any
    comment: str | None
    ip: str | None
    user_agent: str | None
    prev_hash: str
    hash: str

    def hashed_fields(self) -> dict[str, Any]:
        """Every field but `hash`, as the hash covers them."""
        return {
            "id": self.id,
            "at": _at(self.at),
            "actorType": str(self.actor_type),
            "actor": self.actor,
            "actorId": self.actor_id,
            "action": self.action,
            "targetType": self.target_type,
            "targetId": self.target_id,
            "executionId": None if self.execution_id is None else str(self.execution_id),
            "before": self.before,
            "after": self.after,
            "comment": self.comment,
            "ip": self.ip,
            "userAgent": self.user_agent,
            "prevHash": self.prev_hash,
        }

    def computed_hash(self) -> str:
        return hashlib.sha256(canonical(self.hashed_fields())).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """`flowgate audit list --json`: exactly the keys issue 15 names."""
        return {
            "id": self.id,
            "at": clock.iso(self.at),
            "actorType": str(self.actor_type),
            "actor": self.actor,
            "action": self.action,
            "targetType": self.target_type,
            "targetId": self.target_id,
            "executionId": None if self.execution_id is None else str(self.execution_id),
            "before": self.before,
            "after": self.after,
            "comment": self.comment,
            "ip": self.ip,
            "userAgent": self.user_agent,
            "prevHash": self.prev_hash,
            "hash": self.hash,
        }


async def record(
    actor: Actor,
    action: str,
    target_type: str | None,
    target_id: object | None,
    *,
    execution_id: UUID | None = None,
    before: Any = None,
    after: Any = None,
    comment: str | None = None,
) -> AuditEntryView:
    """Append one entry inside the caller's transaction (NotInTransaction otherwise): it
    commits with the change or rolls back with it. Holds the chain's head until then."""
    transaction = pool.engine().current_transaction.get()
    if transaction is None:
        raise NotInTransaction(f"audit.record({action!r}) outside a transaction")
    connection = transaction.connection
    head = await connection.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
    if head is None:
        raise RuntimeError("audit_head has no row: run `flowgate migrate`")
    entry = AuditEntryView(
        id=int(head["seq"]) + 1,
        # Taken under the lock, so times follow the chain (within one clock).
        at=clock.now(),
        actor_type=actor.type,
        actor=actor.name,
        actor_id=actor.id,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        execution_id=execution_id,
        before=_plain(before),
        after=_plain(after),
        comment=comment,
        ip=actor.ip,
        user_agent=actor.user_agent,
        prev_hash=head["hash"],
        hash="",
    )
    entry = msgspec.structs.replace(entry, hash=entry.computed_hash())
    await connection.execute(
        _INSERT,
        entry.id,
        entry.at,
        str(entry.actor_type),
        entry.actor,
        entry.actor_id,
        entry.action,
        entry.target_type,
        entry.target_id,
        entry.execution_id,
        _json_text(entry.before),
        _json_text(entry.after),
        entry.comment,
        entry.ip,
        entry.user_agent,
        entry.prev_hash,
        entry.hash,
    )
    return entry


# --- reads ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilters:
    """`flowgate audit list`'s options and the dashboard's filters alike. `actor` matches the
    shown actor (an email, `key:<prefix>`) or a type (`cli`, `system`, `api_key`, `user`);
    `action` an action, or a family with `row.*`. `own_decisions_of`: a reviewer's user id,
    who sees only their own decisions."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    action: str | None = None
    execution_id: UUID | None = None
    own_decisions_of: UUID | None = None


def _where(filters: AuditFilters) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if filters.since is not None:
        clauses.append(f"at >= {arg(filters.since)}")
    if filters.until is not None:
        clauses.append(f"at < {arg(filters.until)}")
    if filters.actor:
        value = arg(filters.actor.strip().lower())
        clauses.append(f"(lower(actor) = {value} OR actor_type = {value})")
    if filters.action:
        action = filters.action.strip()
        if action.endswith(".*"):
            clauses.append(f"action LIKE {arg(action[:-1] + '%')}")
        else:
            clauses.append(f"action = {arg(action)}")
    if filters.execution_id is not None:
        clauses.append(f"execution_id = {arg(filters.execution_id)}")
    if filters.own_decisions_of is not None:
        clauses.append(
            f"actor_type = 'user' AND actor_id = {arg(str(filters.own_decisions_of))} "
            f"AND action = ANY({arg(list(DECISION_ACTIONS))}::text[])"
        )
    return (" AND ".join(clauses) or "true"), args


_COLUMNS = (
    "id, at, actor_type, actor, actor_id, action, target_type, target_id, execution_id, "
    "before::text AS before, after::text AS after, comment, ip, user_agent, prev_hash, hash"
)


async def list_entries(
    filters: AuditFilters, *, limit: int, cursor: int | None = None, newest_first: bool = True
) -> list[AuditEntryView]:
    """One page by keyset on id: newest first after `cursor` (ids below it), or oldest first
    (ids above it)."""
    where, args = _where(filters)
    if cursor is not None:
        args.append(cursor)
        where += f" AND id {'<' if newest_first else '>'} ${len(args)}"
    args.append(limit)
    order = "DESC" if newest_first else "ASC"
    sql = f"SELECT {_COLUMNS} FROM audit_entry WHERE {where} ORDER BY id {order} LIMIT ${len(args)}"  # noqa: S608 (built from constants; values are parameters)
    async with pool.connection() as connection:
        rows = await connection.fetch(sql, *args)
    return [from_row(dict(row), AuditEntryView) for row in rows]


async def iter_entries(filters: AuditFilters, batch: int = 500) -> AsyncIterator[AuditEntryView]:
    """Every entry that matches, oldest first, read in batches."""
    cursor: int | None = None
    while True:
        page = await list_entries(filters, limit=batch, cursor=cursor, newest_first=False)
        for entry in page:
            yield entry
        if len(page) < batch:
            return
        cursor = page[-1].id


# --- verify -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """`checked` entries from `start` (the checkpoint's entry + 1, or 1); `bad_entry` the
    first that does not match, with `problem`; `head_hash` the last entry's hash (to keep
    elsewhere: it anchors everything before it)."""

    ok: bool
    checked: int
    start: int
    head_id: int
    head_hash: str
    bad_entry: int | None = None
    problem: str | None = None


async def verify(batch: int = 1000) -> Verification:
    """Walk the chain from the last checkpoint (or the start) to the head, in one snapshot."""
    async with (
        pool.connection() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        head = await connection.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1")
        checkpoint = await connection.fetchrow(
            "SELECT entry_id, entry_hash FROM audit_checkpoint ORDER BY entry_id DESC LIMIT 1"
        )
        expected_id = 1 if checkpoint is None else int(checkpoint["entry_id"]) + 1
        prev_hash = GENESIS if checkpoint is None else str(checkpoint["entry_hash"])
        start, checked = expected_id, 0
        if head is None:
            raise RuntimeError("audit_head has no row: run `flowgate migrate`")
        head_id, head_hash = int(head["seq"]), str(head["hash"])

        def failed(entry_id: int, problem: str) -> Verification:
            return Verification(False, checked, start, head_id, head_hash, entry_id, problem)

        cursor = expected_id - 1
        while True:
            rows = await connection.fetch(
                f"SELECT {_COLUMNS} FROM audit_entry WHERE id > $1 ORDER BY id LIMIT $2",  # noqa: S608 (constant columns)
                cursor,
                batch,
            )
            for row in rows:
                entry = from_row(dict(row), AuditEntryView)
                if entry.id != expected_id:
                    return failed(expected_id, f"entry {expected_id} is missing")
                if entry.prev_hash != prev_hash:
                    return failed(
                        entry.id, f"entry {entry.id} does not follow entry {entry.id - 1}"
                    )
                if entry.computed_hash() != entry.hash:
                    return failed(entry.id, f"entry {entry.id} does not match its hash")
                prev_hash, expected_id, checked = entry.hash, expected_id + 1, checked + 1
            if len(rows) < batch:
                break
            cursor = expected_id - 1
        if expected_id - 1 != head_id or prev_hash != head_hash:
            return failed(
                expected_id, f"the chain ends at entry {expected_id - 1} but its head is {head_id}"
            )
        return Verification(True, checked, start, head_id, head_hash)


async def anchored_hash(entry_id: int) -> str | None:
    """The hash entry `entry_id` has now (a purged one's from its checkpoint, if it ended a
    batch), to compare with a head hash kept elsewhere; None when nothing records it."""
    async with pool.connection() as connection:
        value = await connection.fetchval(
            "SELECT hash FROM audit_entry WHERE id = $1 UNION ALL "
            "SELECT entry_hash FROM audit_checkpoint WHERE entry_id = $1 LIMIT 1",
            entry_id,
        )
    return None if value is None else str(value)


# --- retention ----------------------------------------------------------------------------------

# pg_advisory_xact_lock key of the purge: two purges never interleave their batches.
_PURGE_LOCK = 0x6175646974  # "audit"


@dataclass(frozen=True)
class Purged:
    deleted: int
    checkpoint_id: int | None  # the last entry deleted, which verify now starts after


async def purge_expired(retention_days: int, batch: int = 1000) -> Purged:
    """Delete entries older than `retention_days`, oldest first, `batch` at a time: each batch
    one transaction that tells the trigger its cutoff (SET LOCAL flowgate.audit_purge_before)
    and records the last entry it deleted in audit_checkpoint, so `verify` still passes. Only
    a prefix of the chain is ever deleted (up to the first entry that is too young)."""
    cutoff = clock.now() - timedelta(days=retention_days)
    deleted, last_id = 0, None
    while True:
        async with pool.engine().transaction() as transaction:
            connection = transaction.connection
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _PURGE_LOCK)
            await connection.execute(
                "SELECT set_config('flowgate.audit_purge_before', $1, true)", cutoff.isoformat()
            )
            rows = await connection.fetch(
                "SELECT id, hash, at FROM audit_entry ORDER BY id LIMIT $1", batch
            )
            old = []
            for row in rows:
                if row["at"] >= cutoff:
                    break
                old.append(row)
            if not old:
                break
            last = old[-1]
            await connection.execute("DELETE FROM audit_entry WHERE id <= $1", last["id"])
            await connection.execute(
                "INSERT INTO audit_checkpoint (id, entry_id, entry_hash, entry_at, purged, "
                "  created_at) VALUES (gen_random_uuid(), $1, $2, $3, $4, now())",
                last["id"],
                last["hash"],
                last["at"],
                len(old),
            )
        deleted, last_id = deleted + len(old), int(last["id"])
        if len(old) < batch:
            break
    return Purged(deleted, last_id)
