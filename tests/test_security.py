"""Security checks: keys stored hashed only, and no secret in any log line of a full run."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from tests.factories import PUBLIC, auth, create_key, rows, start
from tests.receiver import Receiver
from web.domain.tables import ApiKey
from web.logs import JsonFormatter

WEBHOOK_SECRET = "whsec_do-not-log-me-3f9a1c"


async def test_the_key_table_holds_no_usable_secret(client: httpx.AsyncClient) -> None:
    new = await create_key()
    (row,) = await ApiKey.select()
    assert new.secret not in {str(value) for value in row.values()}
    assert row["key_hash"] != new.secret and len(row["key_hash"]) == 64
    assert row["prefix"] == new.secret[:8]


async def test_a_full_run_logs_neither_the_api_key_nor_the_webhook_secret(
    client: httpx.AsyncClient,
    run_worker: Any,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    new = await create_key(webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET)
    receiver.respond_with(500)  # one failed attempt is logged too
    execution_id = await start(client, new.secret, csv_data=rows(3))
    await run_worker()
    await client.post(f"{PUBLIC}/executions/{execution_id}/approve", headers=auth(new.secret))
    await client.get(f"{PUBLIC}/executions/{execution_id}/results", headers=auth(new.secret))
    await client.get(f"{PUBLIC}/executions/{execution_id}/status", headers=auth("f" * 64))
    await run_worker()
    await receiver.wait_for(4)

    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    raw = [record.getMessage() for record in caplog.records]
    assert len(lines) > 10  # the run was logged at debug level
    for text in (*lines, *raw, caplog.text):
        assert new.secret not in text
        assert WEBHOOK_SECRET not in text


def test_the_log_formatter_masks_anything_shaped_like_a_key() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "key %s", ("a" * 64,), None)
    line = JsonFormatter().format(record)
    assert "a" * 64 not in line
    assert '"message": "key aaaaaaaa…[redacted]"' in line
