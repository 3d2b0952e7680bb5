"""`send_message`: sends approved, compliant rows; the others end `skipped` or `rejected`.

A row already `sent` is never offered to a provider again. How a re-run after a crash stays
free of duplicates depends on the provider (worker.providers.messaging):

- resend-safe (the sandbox): rows go out in batches and each batch's results are saved before
  the next (by the sandbox itself, in the statement that records the messages:
  `saves_results`); the provider keeps one message per row, so a batch cut off is simply
  offered again.
- HTTP providers (`whatsapp_cloud`, `http`): each row is marked `sending` (committed) right
  before its call and its result saved right after, `concurrency` rows at a time. A row found
  still `sending` when the step starts again was cut off between the call and the save: it ends
  `failed` with UNKNOWN_DELIVERY and is not sent again, because the provider may have delivered
  it and cannot tell us. Rows never attempted are sent normally. The providers themselves repeat
  a call only when the request certainly did not reach them; a 5xx or no answer ends the row
  `failed` with "Delivery state unknown" (SendResult.unknown), never resent.
- A result with `stop` (an invalid token, a wrong URL, nothing listening) ends the step: no new
  row is offered, the rows in flight finish and are saved, and the execution fails with that
  error, once.

A row whose content could not be generated ends `failed` with the generation error (counted in
the results' failedCount), unless a reviewer gave it a message.

Past the job's deadline no new batch or row is started: those in flight are saved and the step
goes on in a new job (Unfinished). The summary counts every row, whichever job sent it.

With `sendWindow` (web.domain.send_window), no row or batch starts outside the sending hours:
those in flight are saved and the run waits for a job deferred to the next opening
(OutsideSendWindow). A row starts only after the provider's shared limit gave it a turn
(Messenger.wait_turn, before it is marked `sending`); no turn before the job's deadline leaves
it for the next job.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any
from uuid import UUID

from msgspec.structs import replace

from web.domain import clock, execution_rows, suppressions
from web.domain.execution_rows import RowState
from web.domain.send_window import SendWindow
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
from worker.steps.context import OutsideSendWindow, StepContext, StepError, Unfinished

DEFAULT_BATCH_SIZE = 25

DELIVERY_UNKNOWN_PREFIX = "Delivery state unknown"  # UNKNOWN_DELIVERY and SendResult.unknown
REJECTED_REASON = "Rejected by reviewer"  # when the reviewer gave no reason of their own
UNKNOWN_DELIVERY = "Delivery state unknown after a worker crash; not resent to avoid a duplicate"


def _not_sendable(row: RowState) -> tuple[SendStatus, str] | None:
    if not row.generated_content and row.error:
        return SendStatus.FAILED, row.error  # the content provider failed on it
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


def _closed_until(window: SendWindow | None) -> datetime | None:
    """When the window opens next, if it is closed now (clock.now: injectable in tests)."""
    return None if window is None else window.next_open(clock.now())


async def _send_in_batches(
    ctx: StepContext,
    provider: Messenger,
    to_send: list[OutgoingMessage],
    batch_size: int,
    window: SendWindow | None,
) -> list[SendResult]:
    results: list[SendResult] = []
    for start in range(0, len(to_send), batch_size):
        if start and ctx.out_of_time():
            raise Unfinished
        resumes_at = _closed_until(window)
        if resumes_at is not None:
            raise OutsideSendWindow(resumes_at)
        batch = await provider.send(to_send[start : start + batch_size])
        if not provider.saves_results:
            await _save(batch)
        results.extend(batch)
    return results


async def _send_each_once(
    ctx: StepContext,
    provider: Messenger,
    to_send: list[OutgoingMessage],
    window: SendWindow | None,
) -> list[SendResult]:
    """Each row once, `concurrency` at a time; StepError once a result says `stop` (after the
    rows in flight are saved: they are never cancelled mid-call); Unfinished when the job's
    deadline left rows unsent; OutsideSendWindow when the sending hours ended."""
    stopping: list[str] = []
    late = False
    closed: list[datetime] = []

    async def one(message: OutgoingMessage) -> SendResult | None:
        nonlocal late
        if stopping or closed:
            return None  # left unsent
        if ctx.out_of_time():
            late = True
            return None  # left unsent, for the step's next job
        resumes_at = _closed_until(window)
        if resumes_at is not None:
            closed.append(resumes_at)
            return None  # left unsent, for the next window
        if not await provider.wait_turn(ctx.deadline):
            late = True
            return None  # no turn under the provider's limit before the deadline
        if stopping or closed:
            return None
        if await suppressions.suppressed_rows([(message.row_id, message.recipient)]):
            # Opted out since the step started: checked again just before this send.
            opted_out = SendResult(message.row_id, SendStatus.SKIPPED, None, suppressions.OPTED_OUT)
            await _save([opted_out])
            return opted_out
        if not await execution_rows.mark_sending(message.row_id):
            return None  # no longer unsent: another worker has it
        if stopping:
            result = SendResult.failed(message.row_id, f"Not sent: {stopping[0]}")
        else:
            try:
                (result,) = await provider.send([message])
            except Exception as exc:  # a provider bug: this row's fate is unknown, not retried
                result = SendResult.unknown(message.row_id, str(exc) or type(exc).__name__)
        if result.stop and not stopping:
            stopping.append(result.error or "the provider refused the step's settings")
        await _save([result])
        return result

    outcomes = await map_bounded(to_send, provider.concurrency, one)
    if stopping:
        raise StepError(stopping[0])
    if late:
        raise Unfinished
    if closed:
        raise OutsideSendWindow(closed[0])
    return [result for result in outcomes if result is not None]


async def run(ctx: StepContext) -> dict[str, Any]:
    try:
        provider = messenger(
            ctx.step_settings,
            ProviderContext(
                ctx.http,
                ctx.execution_id,
                ctx.process_settings.sandbox_send_delay_seconds,
                limits=ctx.provider_limits(),
            ),
        )
        window = SendWindow.from_settings(ctx.step_settings)
    except (ProviderConfigError, ValueError) as exc:
        raise StepError(str(exc)) from exc
    to_field = str(ctx.step_settings.get("to_field", "phone"))
    batch_size = max(int(ctx.step_settings.get("batch_size", DEFAULT_BATCH_SIZE)), 1)

    if not provider.resend_safe:
        await execution_rows.fail_unfinished_sends(ctx.execution_id, UNKNOWN_DELIVERY)
    # Read, not handed on (StepContext.rows): fail_unfinished_sends has just changed some.
    every_row = await execution_rows.load(ctx.execution_id)
    settled: list[tuple[UUID, SendStatus, str | None, str | None]] = []
    to_send: list[OutgoingMessage] = []
    for row in (r for r in every_row if r.send_status is None):
        outcome = _not_sendable(row)
        if outcome:
            settled.append((row.id, outcome[0], None, outcome[1]))
        else:
            recipient = str(row.data.get(to_field, "")).strip()
            to_send.append(
                OutgoingMessage(row.id, recipient, row.generated_content or "", row.data)
            )
    # Checked again just before sending: an opt-out that came while the run waited for its
    # approval still stops the message (issue 16).
    opted_out = set(await suppressions.suppressed_rows([(m.row_id, m.recipient) for m in to_send]))
    if opted_out:
        settled += [(m, SendStatus.SKIPPED, None, suppressions.OPTED_OUT) for m in opted_out]
        to_send = [m for m in to_send if m.row_id not in opted_out]
    await execution_rows.save_send_results(settled)

    resumes_at = _closed_until(window) if to_send else None
    if resumes_at is not None:
        raise OutsideSendWindow(resumes_at)  # nothing starts: the run waits for the window
    if provider.resend_safe:
        results = await _send_in_batches(ctx, provider, to_send, batch_size, window)
    else:
        results = await _send_each_once(ctx, provider, to_send, window)
    # Every row as saved now, handed on (the engine builds the output from them).
    saved = {row_id: (status, message_id, error) for row_id, status, message_id, error in settled}
    saved.update((r.row_id, (r.status, r.message_id, r.error)) for r in results)
    ended = [_with(row, saved[row.id]) if row.id in saved else row for row in every_row]
    ctx.pass_rows_on(ended)
    return _summary(ended)


def _with(row: RowState, result: tuple[SendStatus, str | None, str | None]) -> RowState:
    status, message_id, error = result
    return replace(row, send_status=str(status), message_id=message_id, error=error)


def _summary(rows: list[RowState]) -> dict[str, Any]:
    """Every row of the execution by how it ended: those ended by earlier jobs as read when the
    step started, this job's as it saved them. No read again: no one else writes the rows while
    this worker holds the lease, and a row `sent` before was never offered again."""
    statuses = Counter(row.send_status for row in rows)
    summary: dict[str, Any] = {
        "sent": statuses[SendStatus.SENT],
        "failed": statuses[SendStatus.FAILED],
        "skipped": statuses[SendStatus.SKIPPED],
        "rejected": statuses[SendStatus.REJECTED],
    }
    prefix = DELIVERY_UNKNOWN_PREFIX
    unknown = sum(1 for row in rows if (row.error or "").startswith(prefix))
    if unknown:
        summary["delivery_unknown"] = unknown
    return summary
