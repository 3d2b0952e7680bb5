"""The `sandbox` messaging provider: records each message in the database instead of sending.

Idempotent per execution row: a row "sent" twice (a re-run after a crash) keeps its first
message and message id, so a row is never recorded as sent twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from web.domain.statuses import SendStatus
from web.domain.tables import SandboxMessage
from worker.providers.types import OutgoingMessage, ProviderContext, SendResult


class SandboxMessenger:
    resend_safe = True
    concurrency = 1

    def __init__(self, channel: str, delay_seconds: float = 0.0) -> None:
        self.channel = channel
        self.delay_seconds = delay_seconds

    @classmethod
    def for_step(cls, settings: dict[str, Any], context: ProviderContext) -> SandboxMessenger:
        return cls(str(settings.get("channel", "whatsapp")), context.sandbox_delay_seconds)

    async def wait_turn(self, deadline: float) -> bool:
        return True  # no shared limit

    async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not messages:
            return []
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds * len(messages))
        ids = [m.row_id for m in messages]
        # One round trip: the rows recorded now (RETURNING) and those recorded by an earlier
        # attempt (the outer SELECT does not see the CTE's inserts, so no row comes twice).
        recorded = await SandboxMessage.raw(
            "WITH added AS ("
            "  INSERT INTO sandbox_message "
            "    (id, execution_row, channel, recipient, body, message_id, created_at) "
            "  SELECT gen_random_uuid(), v.row_id, {}, v.recipient, v.body, "
            "    {} || replace(gen_random_uuid()::text, '-', ''), now() "
            "  FROM unnest({}::uuid[], {}::text[], {}::text[]) AS v(row_id, recipient, body) "
            "  ON CONFLICT (execution_row) DO NOTHING RETURNING execution_row, message_id) "
            "SELECT execution_row, message_id FROM added "
            "UNION ALL SELECT execution_row, message_id FROM sandbox_message "
            "WHERE execution_row = ANY({}::uuid[])",
            self.channel,
            f"{self.channel}_msg_",
            ids,
            [m.recipient for m in messages],
            [m.body for m in messages],
            ids,
        )
        by_row = {row["execution_row"]: row["message_id"] for row in recorded}
        return [SendResult(row_id=i, status=SendStatus.SENT, message_id=by_row[i]) for i in ids]
