"""`send_message`: sends approved, compliant rows; the others end `skipped` or `rejected`.

A row already `sent` is never offered to a provider again. How a re-run after a crash stays
free of duplicates depends on the provider (worker.providers.messaging):

- resend-safe (the sandbox): rows go out in batches and each batch's results are saved before
  the next; the provider itself keeps one message per row, so a batch cut off is simply offered
  again.
- HTTP providers (`whatsapp_cloud`, `http`): each row is marked `sending` (committed) right
  before its call and its result saved right after, `concurrency` rows at a time. A row found
  still `sending` when the step starts again was cut off between the call and the save: it ends
  `failed` with UNKNOWN_DELIVERY and is not sent again, because the provider may have delivered
  it and cannot tell us. Rows never attempted are sent normally.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from web.domain import execution_rows
from web.domain.execution_rows import RowState
from web.domain.statuses import ComplianceStatus, RowDecision, SendStatus
from worker.concurrency import map_bounded
from worker.providers.messaging import messenger
from worker.providers.types import (
    Messenger,
    OutgoingMessage,
    ProviderConfigError,
    ProviderContext,
    SendResult,
)
from worker.steps.context import StepContext, StepError, keeping_lease

DEFAULT_BATCH_SIZE = 25

REJECTED_REASON = "Rejected by reviewer"  # when the reviewer gave no reason of their own
UNKNOWN_DELIVERY = "Delivery state unknown after a worker crash; not resent to avoid a duplicate"


def _not_sendable(row: RowState) -> tuple[SendStatus, str] | None:
    if row.decision == RowDecision.REJECTED:
        return SendStatus.REJECTED, row.decision_reason or REJECTED_REASON
    if row.compliance_status != ComplianceStatus.PASSED:
        reasons = "; ".join(row.compliance_reasons) or "no compliance result"
        return SendStatus.SKIPPED, f"Compliance check failed: {reasons}"
    if not row.generated_content:
        return SendStatus.SKIPPED, "No generated content"
    return None


async def _save(results: list[SendResult]) -> None:
    await execution_rows.save_send_results(
        [(r.row_id, r.status, r.message_id, r.error) for r in results]
    )


async def _send_in_batches(
    ctx: StepContext, provider: Messenger, to_send: list[OutgoingMessage], batch_size: int
) -> list[SendResult]:
    results: list[SendResult] = []
    for start in range(0, len(to_send), batch_size):
        await ctx.renew_lease()
        batch = await provider.send(to_send[start : start + batch_size])
        await _save(batch)
        results.extend(batch)
    return results


async def _send_each_once(provider: Messenger, to_send: list[OutgoingMessage]) -> list[SendResult]:
    async def one(message: OutgoingMessage) -> SendResult | None:
        if not await execution_rows.mark_sending(message.row_id):
            return None  # no longer unsent: another worker has it
        try:
            (result,) = await provider.send([message])
        except Exception as exc:  # a provider bug: this row's fate is unknown, not retried
            result = SendResult.failed(message.row_id, f"Delivery state unknown: {exc}")
        await _save([result])
        return result

    outcomes = await map_bounded(to_send, provider.concurrency, one)
    return [result for result in outcomes if result is not None]


async def run(ctx: StepContext) -> dict[str, Any]:
    try:
        provider = messenger(
            ctx.step_settings,
            ProviderContext(
                ctx.http, ctx.execution_id, ctx.process_settings.sandbox_send_delay_seconds
            ),
        )
    except ProviderConfigError as exc:
        raise StepError(str(exc)) from exc
    to_field = str(ctx.step_settings.get("to_field", "phone"))
    batch_size = max(int(ctx.step_settings.get("batch_size", DEFAULT_BATCH_SIZE)), 1)

    unknown = 0
    if not provider.resend_safe:
        unknown = await execution_rows.fail_unfinished_sends(ctx.execution_id, UNKNOWN_DELIVERY)
    rows = [r for r in await execution_rows.load(ctx.execution_id) if r.send_status is None]
    settled: list[tuple[UUID, SendStatus, str | None, str | None]] = []
    to_send: list[OutgoingMessage] = []
    for row in rows:
        outcome = _not_sendable(row)
        if outcome:
            settled.append((row.id, outcome[0], None, outcome[1]))
        else:
            recipient = str(row.data.get(to_field, "")).strip()
            to_send.append(
                OutgoingMessage(row.id, recipient, row.generated_content or "", row.data)
            )
    await execution_rows.save_send_results(settled)

    if provider.resend_safe:
        results = await _send_in_batches(ctx, provider, to_send, batch_size)
    else:
        results = await keeping_lease(ctx, _send_each_once(provider, to_send))
    sent = sum(1 for r in results if r.status == SendStatus.SENT)
    failed = sum(1 for r in results if r.status == SendStatus.FAILED) + unknown
    skipped = sum(1 for s in settled if s[1] == SendStatus.SKIPPED)
    return {"sent": sent, "failed": failed, "skipped": skipped, "rejected": len(settled) - skipped}
