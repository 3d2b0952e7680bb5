"""Retention of personal data: executions that ended (`completed_at`) before a cutoff lose
their personal data, and keep their summary.

Removed: each row's input (`data`: names, phone numbers, the caller's fields), its generated
and original message, the compliance reasons (they quote the phone), the reviewer's reason
and the row's error text (a provider's error may quote the number), message ids that flowgate
did not make itself (a WhatsApp `wamid.` encodes the recipient's number), the sandbox
provider's recipient and body, the execution's approval comment, `customerId` and error
texts in the stored results, webhook event bodies and the receivers' answers, and any stored
Idempotency-Key answer about the execution.

Kept: ids, workflow, API key, status, approval status and who decided, every time, row count,
`truncated_from`, step results (counts), each row's position, compliance status, decision
and send status, token usage, and the execution's own `error`: what usage pages, quotas and
history read. The execution is marked `personal_data_purged_at`.

Work goes in batches (`batch_size` executions per transaction, locked `FOR UPDATE SKIP
LOCKED`, so a batch never waits for, nor holds up, anything else for long); a batch marks what
it purged, so a run stopped halfway goes on where it stopped, and a second run finds nothing.

Another table with personal data is one more `PersonalData` entry in `PERSONAL_DATA` (before
the execution's own, which is last because it marks the execution done).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from web.domain import clock, pool
from web.domain.errors import InvalidInput

# What the stored results say in place of an error or reason text that was removed.
REMOVED = "Removed by the retention policy"
# Message ids flowgate makes itself (the sandbox provider): random, nothing personal.
OWN_MESSAGE_ID = "^whatsapp_msg_[0-9a-f]+$"


@dataclass(frozen=True)
class PersonalData:
    """Personal data of one table: the rows of a batch's executions (`rows`, a condition in
    which `$1` is their ids, `uuid[]`) and what to do with them: `clear` (a SET list) keeps
    the rows, None deletes them. `kind` names the count in reports."""

    kind: str
    table: str
    rows: str
    clear: str | None = None


_RESULTS = f"""
    (SELECT coalesce(jsonb_agg(
        jsonb_build_object(
            'customerId', NULL, 'status', r->'status', 'purged', true,
            'messageId', CASE WHEN r->>'messageId' ~ '{OWN_MESSAGE_ID}'
                              THEN r->'messageId' ELSE 'null'::jsonb END)
        || CASE WHEN r ? 'error' THEN jsonb_build_object('error', '{REMOVED}')
                WHEN r ? 'reason' THEN jsonb_build_object('reason', '{REMOVED}')
                ELSE '{{}}'::jsonb END
        ORDER BY ord), '[]'::jsonb)
     FROM jsonb_array_elements(output->'results') WITH ORDINALITY AS t(r, ord))
"""  # noqa: S608 (constants only)

PERSONAL_DATA: tuple[PersonalData, ...] = (
    PersonalData(
        "rows",
        "execution_row",
        "execution = ANY($1::uuid[])",
        "data = '{}'::jsonb, generated_content = NULL, original_content = NULL, "
        "compliance_reasons = '[]'::jsonb, decision_reason = NULL, "
        f"error = CASE WHEN error IS NULL THEN NULL ELSE '{REMOVED}' END, "
        f"message_id = CASE WHEN message_id ~ '{OWN_MESSAGE_ID}' THEN message_id END",
    ),
    PersonalData(
        "sandbox_messages",
        "sandbox_message",
        "execution_row IN (SELECT id FROM execution_row WHERE execution = ANY($1::uuid[]))",
        "recipient = '', body = ''",
    ),
    PersonalData(
        "webhook_bodies",
        "webhook_event",
        "execution = ANY($1::uuid[]) AND payload <> ''",
        "payload = ''",
    ),
    PersonalData(
        "webhook_answers",
        "webhook_attempt",
        "event IN (SELECT id FROM webhook_event WHERE execution = ANY($1::uuid[])) "
        "AND response_body IS NOT NULL",
        "response_body = NULL",
    ),
    PersonalData(
        "idempotency_answers",
        "idempotent_request",
        'substring(body FROM \'"executionId":"([0-9a-f-]{36})"\')::uuid = ANY($1::uuid[])',
    ),
    # Last: it marks the execution purged.
    PersonalData(
        "executions",
        "execution",
        "id = ANY($1::uuid[])",
        "approval_comment = NULL, personal_data_purged_at = now(), "
        "output = CASE WHEN jsonb_typeof(output->'results') = 'array' "
        f"  THEN jsonb_set(output, '{{results}}', {_RESULTS}) ELSE output END",
    ),
)

KINDS = tuple(target.kind for target in PERSONAL_DATA)


@dataclass
class PurgeReport:
    """What a purge removed (or, dry, would remove): rows per kind, and the batches."""

    cutoff: datetime
    dry_run: bool
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    batches: int = 0


_DUE = (
    "SELECT id FROM execution WHERE personal_data_purged_at IS NULL "
    "AND completed_at IS NOT NULL AND completed_at < $1 "
    "AND ($2::timestamptz IS NULL OR (completed_at, id) > ($2, $3::uuid)) "
    "ORDER BY completed_at, id LIMIT $4"
)


async def purge_personal_data(
    cutoff: datetime, *, batch_size: int = 500, dry_run: bool = False
) -> PurgeReport:
    """Remove the personal data of executions that ended before `cutoff`, `batch_size` per
    transaction. `dry_run` counts the same rows and changes nothing."""
    if batch_size < 1:
        raise InvalidInput("batch_size must be at least 1")
    report = PurgeReport(cutoff=cutoff, dry_run=dry_run)
    if dry_run:
        await _count_all(report, batch_size)
        return report
    while True:
        async with pool.connection() as connection, connection.transaction():
            ids = [
                row["id"]
                for row in await connection.fetch(
                    _DUE + " FOR UPDATE SKIP LOCKED", cutoff, None, None, batch_size
                )
            ]
            if not ids:
                return report
            for target in PERSONAL_DATA:
                if target.clear is None:
                    sql = f"DELETE FROM {target.table} WHERE {target.rows}"  # noqa: S608
                else:
                    sql = f"UPDATE {target.table} SET {target.clear} WHERE {target.rows}"  # noqa: S608
                status = await connection.execute(sql, ids)
                report.counts[target.kind] += int(status.rsplit(" ", 1)[-1])
        report.batches += 1
        if len(ids) < batch_size:
            return report


async def _count_all(report: PurgeReport, batch_size: int) -> None:
    """The counts a purge would report, batch by batch in the same order (keyset), reading."""
    after: tuple[datetime, UUID] | None = None
    while True:
        async with pool.connection() as connection:
            rows = await connection.fetch(
                _DUE.replace("SELECT id", "SELECT id, completed_at"),
                report.cutoff,
                after[0] if after else None,
                after[1] if after else None,
                batch_size,
            )
            if not rows:
                return
            ids = [row["id"] for row in rows]
            for target in PERSONAL_DATA:
                sql = f"SELECT count(*) FROM {target.table} WHERE {target.rows}"  # noqa: S608
                report.counts[target.kind] += int(await connection.fetchval(sql, ids))
        report.batches += 1
        after = (rows[-1]["completed_at"], rows[-1]["id"])
        if len(rows) < batch_size:
            return


_AGE = re.compile(r"(\d{1,5})([dh])")
AGE_FORMAT = "a whole number of days or hours, e.g. 90d or 36h"


def parse_age(text: str) -> timedelta:
    """`90d` or `36h` as a timedelta; InvalidInput naming the format otherwise."""
    found = _AGE.fullmatch(text.strip().lower())
    if found is None or int(found.group(1)) < 1:
        raise InvalidInput(f"--older-than: expected {AGE_FORMAT}, got {text!r}")
    number = int(found.group(1))
    return timedelta(days=number) if found.group(2) == "d" else timedelta(hours=number)


def cutoff_for(age: timedelta) -> datetime:
    return clock.now() - age
