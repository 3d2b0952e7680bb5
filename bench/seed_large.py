"""Seed a migrated flowgate database with many executions and rows, in SQL (`generate_series`).

    DATABASE_URL=postgresql://…/flowgate_bench_large .venv/bin/python bench/seed_large.py \
        [--executions 100000] [--rows 100]

`bench/run.py --large` calls `ensure_seeded` instead: it keeps its database between runs and
seeds it again only when the seed's version or the migration level changed (the marker table
`bench_seed`). What it writes, in one transaction, deterministic (setseed):

- 8 keys beside those already there (`bench-large-1` … `-8`) and 3 more workflows copied from the
  BFSI template (`bench_large_workflow_1` … `_3`);
- `executions` executions over the last 180 days, one a key and workflow in turn, newest last;
  statuses spread as in real use: about 85% completed, 6% cancelled (most of them rejected at
  the approval gate), 7% failed, the last 2,000 with about 300 `pending_approval`, 30 `running`
  and 30 `pending`; each with the definition copied in as execute copies it, its step results
  and, when completed, its output;
- `rows` rows per execution, laid out by execution as execute inserts them, each with its input
  data (about 150 bytes of JSONB), its generated message (about 220 characters), compliance
  (4% failed), decision and send result as its execution's status implies.

The indexes and constraints of `execution_row` are dropped during the load and rebuilt after
it (as fast as they get), then both tables are vacuumed and analysed (visibility map included,
so index-only scans work as they would on a table that has settled).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

# Raise when the data this writes changes: `ensure_seeded` then seeds again.
SEED_VERSION = 1
KEYS = 8
EXTRA_WORKFLOWS = 3
TEMPLATE_WORKFLOW = "workflow_bfsi_marketing_template"
MIGRATIONS = Path(__file__).resolve().parent.parent / "web" / "domain" / "piccolo_migrations"

MARKER_TABLE = """
CREATE TABLE IF NOT EXISTS bench_seed (
    seed_version integer NOT NULL,
    migration text NOT NULL,
    executions integer NOT NULL,
    rows_per_execution integer NOT NULL,
    seconds real NOT NULL,
    seeded_at timestamptz NOT NULL DEFAULT now()
)
"""

KEYS_SQL = """
INSERT INTO api_key (id, name, key_hash, prefix, active, monthly_limit, allowed_workflows,
                     webhook_events, created_at)
SELECT gen_random_uuid(), 'bench-large-' || k, md5('bench-large-' || k) || md5(k::text),
       'fg_bl' || k, true, 1000000000, '{}', '{}', now() - interval '200 days'
FROM generate_series(1, $1::int) AS k
"""

WORKFLOWS_SQL = """
INSERT INTO workflow (id, name, description, active, required_fields, steps, created_at,
                      updated_at)
SELECT 'bench_large_workflow_' || w, name || ' ' || w, description, active, required_fields,
       steps, created_at, updated_at
FROM workflow, generate_series(1, $1::int) AS w WHERE id = $2
"""

# One execution per i; key and workflow in turn; created_at from 180 days ago to a minute ago.
EXECUTIONS_SQL = """
WITH keys AS (SELECT array_agg(id ORDER BY name) AS ids FROM api_key WHERE name LIKE 'bench-large-%'),
     flows AS (SELECT array_agg(id ORDER BY id) AS ids FROM workflow),
     plan AS (
        SELECT i, random() AS r,
               now() - interval '1 minute'
                   - (interval '180 days') * (1 - i::float8 / $1) + random() * interval '1 minute'
                   AS at
        FROM generate_series(1, $1::int) AS i
     ),
     picked AS (
        SELECT i, at, keys.ids[1 + i % array_length(keys.ids, 1)] AS api_key,
               flows.ids[1 + (i / 7) % array_length(flows.ids, 1)] AS workflow,
               CASE
                   WHEN i > $1 - 2000 AND i % 7 = 0 THEN 'pending_approval'
                   WHEN i > $1 - 2000 AND i % 67 = 1 THEN 'running'
                   WHEN i > $1 - 2000 AND i % 67 = 2 THEN 'pending'
                   WHEN r < 0.85 THEN 'completed'
                   WHEN r < 0.91 THEN 'cancelled'
                   ELSE 'failed'
               END AS status, r
        FROM plan, keys, flows
     )
INSERT INTO execution (id, workflow, api_key, description, definition, status, approval_status,
                       approval_comment, approval_decided_by, approval_decided_at, row_count,
                       current_step, step_results, output, error, created_at, started_at,
                       completed_at, updated_at)
SELECT gen_random_uuid(), p.workflow, p.api_key, 'Campaign ' || (p.i % 500),
       jsonb_build_object('id', w.id, 'name', w.name, 'steps', w.steps), p.status,
       CASE p.status WHEN 'completed' THEN 'approved'
                     WHEN 'cancelled' THEN CASE WHEN p.r < 0.90 THEN 'rejected' END
                     WHEN 'pending_approval' THEN 'pending' END,
       CASE WHEN p.status = 'cancelled' AND p.r < 0.90 THEN 'Tone does not fit the brand' END,
       CASE WHEN p.status IN ('completed', 'cancelled') THEN 'reviewer@example.com' END,
       CASE WHEN p.status IN ('completed', 'cancelled') THEN p.at + interval '2 hours' END,
       $2::int, CASE p.status WHEN 'completed' THEN 4 WHEN 'pending_approval' THEN 2 ELSE 0 END,
       CASE WHEN p.status IN ('completed', 'pending_approval', 'cancelled') THEN
           jsonb_build_array(
               jsonb_build_object('index', 0, 'type', 'generate_content', 'status', 'completed',
                                  'rows', $2::int, 'seconds', 4.2),
               jsonb_build_object('index', 1, 'type', 'compliance_check', 'status', 'completed',
                                  'passed', $2 - $2 / 25, 'failed', $2 / 25))
       ELSE '[]'::jsonb END,
       CASE WHEN p.status = 'completed' THEN
           jsonb_build_object('summary', jsonb_build_object('total', $2, 'sent', $2 - $2 / 25,
                              'failed', 0, 'skipped', $2 / 25), 'channel', 'whatsapp')
       END,
       CASE WHEN p.status = 'failed' THEN 'content provider: 503 Service Unavailable' END,
       p.at, p.at,
       CASE WHEN p.status IN ('completed', 'cancelled', 'failed') THEN p.at + interval '2 hours 3 minutes' END,
       p.at + interval '2 hours 3 minutes'
FROM picked p JOIN workflow w ON w.id = p.workflow
ORDER BY p.i
"""

# Rows of every execution, by execution in the order they were created.
ROWS_SQL = """
INSERT INTO execution_row (id, execution, position, data, generated_content, original_content,
                           compliance_status, compliance_reasons, decision, decided_by,
                           decided_at, content_usage, send_status, message_id, error, sent_at)
SELECT gen_random_uuid(), e.id, g.p,
       jsonb_build_object(
           'customerId', 'CUST' || lpad((g.p + e.row_no * 7)::text, 7, '0'),
           'name', (ARRAY['John Doe','Asha Rao','Vikram Singh','Priya Nair','Rahul Mehta','Neha Iyer'])[1 + g.p % 6],
           'phone', '+91861' || lpad(((e.row_no * 131 + g.p) % 10000000)::text, 7, '0'),
           'city', (ARRAY['Mumbai','Delhi','Bengaluru','Chennai','Pune','Kolkata','Hyderabad'])[1 + (g.p + e.row_no) % 7],
           'income_bracket', (ARRAY['25000-50000','50000-75000','75000-100000','100000+'])[1 + g.p % 4],
           'credit_score', (600 + (g.p * 37 + e.row_no) % 250)::text),
       CASE WHEN e.generated THEN
           'Hi ' || (ARRAY['John','Asha','Vikram','Priya','Rahul','Neha'])[1 + g.p % 6]
           || ', as a valued customer in ' || (ARRAY['Mumbai','Delhi','Bengaluru','Chennai','Pune','Kolkata','Hyderabad'])[1 + (g.p + e.row_no) % 7]
           || ' you are pre-approved for our Platinum credit card with zero joining fee and '
           || '5% cashback on groceries. Reply YES to know more. T&C apply. Reply STOP to opt out.'
       END,
       NULL,
       CASE WHEN e.generated THEN CASE WHEN g.p % 25 = 3 THEN 'failed' ELSE 'passed' END END,
       CASE WHEN e.generated AND g.p % 25 = 3 THEN '["promises a guaranteed return"]'::jsonb
            ELSE '[]'::jsonb END,
       CASE WHEN e.status = 'completed' THEN CASE WHEN g.p % 25 = 3 THEN 'rejected' ELSE 'approved' END
            WHEN e.status = 'cancelled' AND e.approval_status = 'rejected' THEN 'rejected' END,
       CASE WHEN e.status IN ('completed', 'cancelled') AND e.approval_status IS NOT NULL
            THEN 'reviewer@example.com' END,
       e.approval_decided_at,
       CASE WHEN e.generated THEN '{"prompt_tokens": 182, "completion_tokens": 61}'::jsonb END,
       CASE WHEN e.status = 'completed' THEN CASE WHEN g.p % 25 = 3 THEN 'rejected' ELSE 'sent' END
            WHEN e.status = 'cancelled' THEN 'rejected' END,
       CASE WHEN e.status = 'completed' AND g.p % 25 <> 3 THEN 'sandbox-' || md5(e.id::text || g.p) END,
       NULL,
       CASE WHEN e.status = 'completed' AND g.p % 25 <> 3 THEN e.completed_at END
FROM (SELECT id, status, approval_status, approval_decided_at, completed_at,
             status IN ('completed', 'pending_approval', 'cancelled') AS generated,
             row_number() OVER (ORDER BY created_at, id) AS row_no, $1::int AS n
      FROM execution WHERE api_key IN (SELECT id FROM api_key WHERE name LIKE 'bench-large-%')
      ORDER BY created_at, id) e
     CROSS JOIN LATERAL generate_series(0, e.n - 1) AS g(p)
"""


def migration_level() -> str:
    """The newest migration in the code: the database is migrated to it before seeding."""
    names = sorted(p.stem for p in MIGRATIONS.glob("domain_*.py"))
    return names[-1] if names else ""


async def marker(connection: asyncpg.Connection) -> asyncpg.Record | None:
    exists = await connection.fetchval("SELECT to_regclass('bench_seed') IS NOT NULL")
    if not exists:
        return None
    return await connection.fetchrow("SELECT * FROM bench_seed ORDER BY seeded_at DESC LIMIT 1")


def is_current(row: asyncpg.Record | None, executions: int, rows: int) -> bool:
    return (
        row is not None
        and row["seed_version"] == SEED_VERSION
        and row["migration"] == migration_level()
        and row["executions"] == executions
        and row["rows_per_execution"] == rows
    )


async def _rebuild_row_constraints(connection: asyncpg.Connection) -> list[str]:
    """Drop execution_row's indexes and constraints (and foreign keys pointing at it); return
    the statements that put them back, in order."""
    constraints = await connection.fetch(
        "SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def, "
        "contype, conrelid = 'execution_row'::regclass AS own FROM pg_constraint "
        "WHERE conrelid = 'execution_row'::regclass OR confrelid = 'execution_row'::regclass"
    )
    indexes = await connection.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'execution_row' "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint "
        "WHERE conrelid = 'execution_row'::regclass)"
    )
    restore: list[str] = []
    # Foreign keys into the table first (they depend on its primary key), then its own.
    order = sorted(constraints, key=lambda c: (c["own"], c["contype"] != "f"))
    for c in order:
        await connection.execute(f'ALTER TABLE {c["tbl"]} DROP CONSTRAINT "{c["conname"]}"')
    for i in indexes:
        await connection.execute(f'DROP INDEX "{i["indexname"]}"')
    rank = {"p": 0, "u": 1, "c": 2, "f": 3}
    for c in sorted(constraints, key=lambda c: (not c["own"], rank.get(str(c["contype"]), 4))):
        restore.append(f'ALTER TABLE {c["tbl"]} ADD CONSTRAINT "{c["conname"]}" {c["def"]}')
    restore.extend(i["indexdef"] for i in indexes)
    return restore


async def seed(database_url: str, executions: int, rows: int, log: bool = True) -> float:
    """Seed the (migrated) database; returns the seconds it took. Adds to what is there."""

    def say(message: str) -> None:
        if log:
            print(f"seed: {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    connection = await asyncpg.connect(database_url, command_timeout=None)
    try:
        await connection.execute("SET maintenance_work_mem = '512MB'")
        await connection.execute("SET synchronous_commit = off")
        await connection.execute("SELECT setseed(0.17)")
        async with connection.transaction():
            await connection.execute(KEYS_SQL, KEYS)
            await connection.execute(WORKFLOWS_SQL, EXTRA_WORKFLOWS, TEMPLATE_WORKFLOW)
            say(f"{executions:,} executions")
            await connection.execute(EXECUTIONS_SQL, executions, rows)
            restore = await _rebuild_row_constraints(connection)
            say(f"{executions * rows:,} rows (indexes and constraints rebuilt after)")
            await connection.execute(ROWS_SQL, rows)
            for statement in restore:
                say(statement[:90])
                await connection.execute(statement)
        say("vacuum analyse")
        await connection.execute("VACUUM (ANALYZE) execution")
        await connection.execute("VACUUM (ANALYZE) execution_row")
        await connection.execute("VACUUM (ANALYZE) api_key")
        seconds = time.perf_counter() - started
        await connection.execute(MARKER_TABLE)
        await connection.execute(
            "INSERT INTO bench_seed (seed_version, migration, executions, rows_per_execution, "
            "seconds) VALUES ($1, $2, $3, $4, $5)",
            SEED_VERSION,
            migration_level(),
            executions,
            rows,
            seconds,
        )
        say(f"done in {seconds:.0f} s")
        return seconds
    finally:
        await connection.close()


async def ensure_seeded(
    admin_url: str, database_url: str, name: str, executions: int, rows: int, env: dict[str, str]
) -> tuple[bool, asyncpg.Record]:
    """Keep the database `name` when its marker says it holds this seed at this migration
    level; otherwise drop it, create it, migrate it with `flowgate migrate` and seed it.
    Returns (seeded now, the marker)."""
    admin = await asyncpg.connect(admin_url)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
    finally:
        await admin.close()
    if exists:
        connection = await asyncpg.connect(database_url)
        try:
            row = await marker(connection)
        finally:
            await connection.close()
        if row is not None and is_current(row, executions, rows):
            return False, row
    admin = await asyncpg.connect(admin_url)
    try:
        # `name` matched [a-z_][a-z0-9_]* before it got here.
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    flowgate = Path(sys.executable).parent / "flowgate"
    migrated = subprocess.run(
        [str(flowgate), "migrate"],
        env={**env, "DATABASE_URL": database_url, "PICCOLO_CONF": "piccolo_conf"},
        cwd=MIGRATIONS.parent.parent.parent,
        capture_output=True,
        text=True,
    )
    if migrated.returncode != 0:
        raise RuntimeError(f"flowgate migrate failed:\n{migrated.stdout}{migrated.stderr}")
    await seed(database_url, executions, rows)
    connection = await asyncpg.connect(database_url)
    try:
        row = await marker(connection)
    finally:
        await connection.close()
    assert row is not None
    return True, row


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument(
        "--ensure",
        metavar="DATABASE",
        help="keep or (re)create, migrate and seed this database of DATABASE_URL's server",
    )
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"]
    if args.ensure:
        base = url.rsplit("/", 1)[0]
        fresh, row = asyncio.run(
            ensure_seeded(
                base + "/postgres", f"{base}/{args.ensure}", args.ensure, args.executions,
                args.rows, dict(os.environ),
            )
        )  # fmt: skip
        print(f"seed: {'seeded' if fresh else 'kept'} {dict(row)}", file=sys.stderr)
    else:
        asyncio.run(seed(url, args.executions, args.rows))
