"""Migrations run forward on an empty database, again harmlessly, and back and forth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

TABLES = {"api_key", "api_key_usage", "workflow", "execution", "execution_row", "sandbox_message"}


def _url(database: str) -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, "", ""))


@pytest.fixture
async def scratch_database() -> Iterator[str]:
    name = f"flowgate_migrations_{os.getpid()}"
    admin = await asyncpg.connect(_url("postgres"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield _url(name)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def run(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "PICCOLO_CONF": "piccolo_conf"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, check=False
    )


async def tables(database_url: str) -> set[str]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows} & TABLES


async def test_migrate_on_an_empty_database_creates_every_table_and_seeds(
    scratch_database: str,
) -> None:
    first = run(scratch_database, "-m", "web.cli", "migrate")
    assert first.returncode == 0, first.stderr
    assert "seeded workflow workflow_bfsi_marketing_template" in first.stdout
    assert await tables(scratch_database) == TABLES

    again = run(scratch_database, "-m", "web.cli", "migrate")
    assert again.returncode == 0, again.stderr
    assert "seeded" not in again.stdout


def migration_ids() -> list[str]:
    folder = os.path.join(os.path.dirname(__file__), "..", "web", "domain", "piccolo_migrations")
    names = sorted(f for f in os.listdir(folder) if f.startswith("domain_"))
    ids = []
    for name in names:
        with open(os.path.join(folder, name)) as source:
            line = next(line for line in source if line.startswith("ID = "))
        ids.append(line.split('"')[1])
    return ids


async def test_a_database_at_the_previous_migration_moves_forward_keeping_its_data(
    scratch_database: str,
) -> None:
    ids = migration_ids()
    assert len(ids) >= 2
    at_previous = run(
        scratch_database, "-m", "piccolo.main", "migrations", "forwards", "domain", ids[-2]
    )
    assert at_previous.returncode == 0, at_previous.stdout + at_previous.stderr
    connection = await asyncpg.connect(scratch_database)
    try:
        await connection.execute(
            "INSERT INTO api_key (name, key_hash, prefix) VALUES ('old', 'abc', 'abcdefgh')"
        )
        forward = run(scratch_database, "-m", "web.cli", "migrate")
        assert forward.returncode == 0, forward.stderr
        row = await connection.fetchrow("SELECT * FROM api_key WHERE name = 'old'")
    finally:
        await connection.close()
    assert row is not None
    assert row["key_hash"] == "abc"
    assert row["monthly_limit"] == 1000
    assert row["rate_limit_burst"] is None


async def test_the_latest_migration_goes_back_and_forward_again(scratch_database: str) -> None:
    assert run(scratch_database, "-m", "web.cli", "migrate").returncode == 0

    back = run(
        scratch_database, "-m", "piccolo.main", "migrations", "backwards", "domain",
        "--migration_id=1", "--auto_agree",
    )  # fmt: skip
    assert back.returncode == 0, back.stdout + back.stderr
    forward = run(scratch_database, "-m", "web.cli", "migrate")
    assert forward.returncode == 0, forward.stderr
    assert await tables(scratch_database) == TABLES


async def test_executions_already_waiting_get_the_moment_of_their_reminder_unless_it_was_sent(
    scratch_database: str,
) -> None:
    assert run(scratch_database, "-m", "web.cli", "migrate").returncode == 0
    ids = migration_ids()
    remind_column = ids[-2]  # then ids[-1]: its index, and this backfill
    approval = {"type": "approval", "settings": {"timeout": "2h", "remindBefore": "1h30m"}}
    definition = json.dumps({"steps": [{"type": "generate_content"}, approval]})
    connection = await asyncpg.connect(scratch_database)
    try:
        key = await connection.fetchval(
            "INSERT INTO api_key (name, key_hash, prefix) VALUES ('old', 'abc', 'abcdefgh') "
            "RETURNING id"
        )
        waiting, reminded, done = [
            await connection.fetchval(
                "INSERT INTO execution (workflow, api_key, status, definition, "
                "  approval_deadline) "
                "VALUES ('workflow_bfsi_marketing_template', $1, $2, $3::jsonb, "
                "  now() + interval '2 hours') RETURNING id",
                key,
                status,
                definition,
            )
            for status in ("pending_approval", "pending_approval", "completed")
        ]
        await connection.execute(
            "INSERT INTO notification (execution, kind, channel, recipient) "
            "VALUES ($1, 'reminder', 'email', 'lead@example.com')",
            reminded,
        )
        back = run(
            scratch_database, "-m", "piccolo.main", "migrations", "backwards", "domain",
            f"--migration_id={remind_column}", "--auto_agree",
        )  # fmt: skip
        assert back.returncode == 0, back.stdout + back.stderr
        forward = run(scratch_database, "-m", "web.cli", "migrate")
        assert forward.returncode == 0, forward.stderr
        found = {
            row["id"]: row["late"]
            for row in await connection.fetch(
                "SELECT id, approval_deadline - approval_remind_at AS late FROM execution"
            )
        }
        indexes = {
            row["indexname"]
            for row in await connection.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'execution'"
            )
        }
    finally:
        await connection.close()
    assert found == {waiting: timedelta(minutes=90), reminded: None, done: None}
    assert "execution_approval_due" in indexes and "execution_approval_deadline" not in indexes
