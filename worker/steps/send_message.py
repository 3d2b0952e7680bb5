"""`send_message`: sends approved, compliant rows; the others end `skipped` or `rejected`.

Rows go out in batches; each batch's results are saved before the next batch starts, and a row
already `sent` is never offered to the provider again, so a re-run after a crash resumes where
the last saved batch ended.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from web.domain import execution_rows
from web.domain.execution_rows import RowState
from web.domain.statuses import ComplianceStatus, RowDecision, SendStatus
from worker.providers.sandbox import OutgoingMessage, SandboxMessenger
from worker.steps import StepContext, StepError

DEFAULT_BATCH_SIZE = 25


def _not_sendable(row: RowState) -> tuple[SendStatus, str] | None:
    if row.decision == RowDecision.REJECTED:
        return SendStatus.REJECTED, "Rejected by reviewer"
    if row.compliance_status != ComplianceStatus.PASSED:
        reasons = "; ".join(row.compliance_reasons) or "no compliance result"
        return SendStatus.SKIPPED, f"Compliance check failed: {reasons}"
    if not row.generated_content:
        return SendStatus.SKIPPED, "No generated content"
    return None


async def run(ctx: StepContext) -> dict[str, Any]:
    provider_name = ctx.settings.get("provider", "sandbox")
    if provider_name != "sandbox":
        raise StepError(f"Unknown messaging provider {provider_name!r}")
    channel = str(ctx.settings.get("channel", "whatsapp"))
    to_field = str(ctx.settings.get("to_field", "phone"))
    batch_size = max(int(ctx.settings.get("batch_size", DEFAULT_BATCH_SIZE)), 1)
    messenger = SandboxMessenger(channel, ctx.app.sandbox_send_delay_seconds)

    rows = [r for r in await execution_rows.load(ctx.execution_id) if r.send_status is None]
    settled: list[tuple[UUID, SendStatus, str | None, str | None]] = []
    to_send: list[OutgoingMessage] = []
    for row in rows:
        outcome = _not_sendable(row)
        if outcome:
            settled.append((row.id, outcome[0], None, outcome[1]))
        else:
            recipient = str(row.data.get(to_field, "")).strip()
            to_send.append(OutgoingMessage(row.id, recipient, row.generated_content or ""))
    await execution_rows.save_send_results(settled)

    sent = failed = 0
    for start in range(0, len(to_send), batch_size):
        await ctx.renew_lease()
        results = await messenger.send(to_send[start : start + batch_size])
        await execution_rows.save_send_results(
            [(r.row_id, r.status, r.message_id, r.error) for r in results]
        )
        sent += sum(1 for r in results if r.status == SendStatus.SENT)
        failed += sum(1 for r in results if r.status == SendStatus.FAILED)
    skipped = sum(1 for s in settled if s[1] == SendStatus.SKIPPED)
    return {"sent": sent, "failed": failed, "skipped": skipped, "rejected": len(settled) - skipped}
