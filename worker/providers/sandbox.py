"""The `sandbox` messaging provider: records each message in the database instead of sending.

Idempotent per execution row: a row "sent" twice (a re-run after a crash) keeps its first
message and message id, so a row is never recorded as sent twice. The rows' results are saved
in the same statement as their messages (`saves_results`): a batch is recorded whole or not at
all, and costs one round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from web.domain import pool
from web.domain.statuses import SendStatus
from worker.providers.types import OutgoingMessage, ProviderContext, SendResult

# The rows recorded now (RETURNING) and those recorded by an earlier attempt (the SELECT does
# not see the CTE's inserts, so no row comes twice); each row not `sent` yet is saved as sent
# with its message id, as the step would save it (execution_rows.save_send_results).
_RECORD = (
    "WITH added AS ("
    "  INSERT INTO sandbox_message "
    "    (id, execution_row, channel, recipient, body, message_id, created_at) "
    "  SELECT gen_random_uuid(), v.row_id, $1, v.recipient, v.body, "
    "    $2 || replace(gen_random_uuid()::text, '-', ''), now() "
    "  FROM unnest($3::uuid[], $4::text[], $5::text[]) AS v(row_id, recipient, body) "
    "  ON CONFLICT (execution_row) DO NOTHING RETURNING execution_row, message_id), "
    "recorded AS ("
    "  SELECT execution_row, message_id FROM added "
    "  UNION ALL SELECT execution_row, message_id FROM sandbox_message "
    "  WHERE execution_row = ANY($3::uuid[])), "
    "saved AS ("
    "  UPDATE execution_row AS r SET send_status = 'sent', message_id = recorded.message_id, "
    "    error = NULL, sent_at = now() "
    "  FROM recorded WHERE r.id = recorded.execution_row "
    "    AND r.send_status IS DISTINCT FROM 'sent') "
    "SELECT execution_row, message_id FROM recorded"
)


class SandboxMessenger:
    resend_safe = True
    saves_results = True
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
        recorded = await pool.fetch_rows(
            _RECORD,
            self.channel,
            f"{self.channel}_msg_",
            ids,
            [m.recipient for m in messages],
            [m.body for m in messages],
        )
        by_row = {row["execution_row"]: row["message_id"] for row in recorded}
        return [SendResult(row_id=i, status=SendStatus.SENT, message_id=by_row[i]) for i in ids]
