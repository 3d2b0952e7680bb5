"""Live status of executions for `GET /executions/:id/events`, without polling PostgreSQL per
open stream. Imports only web.domain and asyncpg.

Every change of an execution's status (or approval status) raises its `status_version` and
sends `NOTIFY flowgate_execution_status '<id> <version>'` from a trigger, in the transaction of
the change (so only committed changes are heard, and every transition is covered, whoever
makes it). Each web process keeps one connection of its own that LISTENs (`StatusListener`),
reads the changed execution once per notification, and hands it to every stream of that
execution open in the process. A lost connection is opened again; the streams are then told
to read their execution once, in case a change was missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from web.domain import pool
from web.domain.errors import NotFound
from web.domain.executions import EXECUTION_NOT_FOUND
from web.domain.statuses import ExecutionStatus
from web.domain.types import ReadModel, from_row

logger = logging.getLogger("flowgate.status_events")

CHANNEL = "flowgate_execution_status"
FINAL = (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED)
RECONNECT_SECONDS = 1.0


class StatusSnapshot(ReadModel, frozen=True):
    """What one status event says: the status endpoint's fields, and the version (the id)."""

    id: UUID
    status: str
    approval_status: str | None
    started_at: datetime
    completed_at: datetime | None
    error: str | None
    status_version: int

    @property
    def final(self) -> bool:
        return self.status in FINAL


_SNAPSHOT = (
    "SELECT id, status, approval_status, started_at, completed_at, error, status_version "
    "FROM execution WHERE id = $1"
)


async def snapshot_for_key(execution_id: UUID, api_key_id: UUID) -> StatusSnapshot:
    """The execution's status now, if it belongs to this key; NotFound otherwise."""
    row = await pool.fetch_row(_SNAPSHOT + " AND api_key = $2", execution_id, api_key_id)
    if row is None:
        raise NotFound(EXECUTION_NOT_FOUND)
    return from_row(row, StatusSnapshot)


async def _snapshot(execution_id: UUID) -> StatusSnapshot | None:
    row = await pool.fetch_row(_SNAPSHOT, execution_id)
    return None if row is None else from_row(row, StatusSnapshot)


class StatusListener:
    """One LISTEN connection per web process, fanned out to the streams open in it."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._streams: dict[UUID, set[asyncio.Queue[StatusSnapshot | None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._reads: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._reads):
            task.cancel()

    @contextlib.asynccontextmanager
    async def subscribe(
        self, execution_id: UUID
    ) -> AsyncIterator[asyncio.Queue[StatusSnapshot | None]]:
        """A queue of this execution's changes (None: read it again, something may be lost)."""
        changes: asyncio.Queue[StatusSnapshot | None] = asyncio.Queue()
        self._streams.setdefault(execution_id, set()).add(changes)
        try:
            yield changes
        finally:
            queues = self._streams.get(execution_id)
            if queues is not None:
                queues.discard(changes)
                if not queues:
                    del self._streams[execution_id]

    async def _listen_forever(self) -> None:
        while True:
            try:
                await self._listen_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("status events: cannot listen (%s); retrying", type(exc).__name__)
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen_once(self) -> None:
        """Until the connection is lost."""
        connection = await asyncpg.connect(self.database_url)
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _: lost.set())
        try:
            await connection.add_listener(CHANNEL, self._heard)
            self._tell_everyone(None)  # a change may have slipped by while not listening
            await lost.wait()
            logger.warning("status events: the listening connection was lost; reconnecting")
        finally:
            with contextlib.suppress(Exception):
                await connection.close()

    def _heard(self, _connection: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            text_id, _, _version = str(payload).partition(" ")
            execution_id = UUID(text_id)
        except ValueError:
            return
        if execution_id in self._streams:
            task = asyncio.create_task(self._read_and_tell(execution_id))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)

    async def _read_and_tell(self, execution_id: UUID) -> None:
        """One read per change per process, whatever the number of its streams."""
        try:
            snapshot = await _snapshot(execution_id)
        except Exception:
            logger.warning("status events: could not read execution %s", execution_id)
            snapshot = None  # the streams read it themselves
        for changes in self._streams.get(execution_id, ()):
            changes.put_nowait(snapshot)

    def _tell_everyone(self, snapshot: StatusSnapshot | None) -> None:
        for queues in self._streams.values():
            for changes in queues:
                changes.put_nowait(snapshot)


async def stream_status(
    listener: StatusListener,
    execution_id: UUID,
    api_key_id: UUID,
    last_event_id: int | None,
    keep_alive_seconds: float,
) -> AsyncIterator[StatusSnapshot | None]:
    """The execution's status now (unless `last_event_id` has seen it), then each change, until
    a final status; None every `keep_alive_seconds` without a change (a keep-alive). NotFound
    before anything is sent for an unknown execution, or another key's."""
    seen = last_event_id if last_event_id is not None else -1
    async with listener.subscribe(execution_id) as changes:
        # Read after subscribing (the handler's own read, for its 404, came before): a change
        # committed in between is then either in this read or in the queue, never lost.
        current: StatusSnapshot | None = await snapshot_for_key(execution_id, api_key_id)
        while True:
            if current is not None and current.status_version > seen:
                seen = current.status_version
                yield current
            if current is not None and current.final:
                return
            try:
                heard = await asyncio.wait_for(changes.get(), keep_alive_seconds)
            except TimeoutError:
                yield None
                continue
            current = heard if heard is not None else await _snapshot(execution_id)
