"""The large-tables seed (bench/seed_large.py) on a small scale in the test database, and the
keyset pagination of the dashboard's lists (web/domain/list_pages.py) paging through it while
new executions arrive."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from web.domain import approvals, approvers, executions, list_pages
from web.domain.actors import Actor

ROOT = Path(__file__).resolve().parent.parent
# A reviewer in no group: the seeded workflows name no approverGroups, so every execution (the
# executions list applies its approverGroups filter to a non-admin: these pages go through it).
ANYONE = approvers.Approver(Actor.user(uuid4(), "reviewer@example.com", user_agent=None))
ADMIN = approvers.Approver(Actor.user(uuid4(), "admin@example.com", user_agent=None), is_admin=True)


def _seed_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("seed_large", ROOT / "bench" / "seed_large.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["seed_large"] = module
    spec.loader.exec_module(module)
    return module


seed_large = _seed_module()


async def _fetch(sql: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


@pytest.fixture
async def seeded() -> None:
    await seed_large.seed(os.environ["DATABASE_URL"], 100, 100, log=False)


async def test_the_seed_writes_the_counts_it_says(seeded: None) -> None:
    [counts] = await _fetch(
        "SELECT (SELECT count(*) FROM execution) AS executions, "
        "(SELECT count(*) FROM execution_row) AS rows, "
        "(SELECT count(*) FROM api_key WHERE name LIKE 'bench-large-%') AS keys, "
        "(SELECT count(*) FROM workflow) AS workflows, "
        "(SELECT count(DISTINCT api_key) FROM execution) AS used_keys, "
        "(SELECT count(DISTINCT workflow) FROM execution) AS used_workflows, "
        "(SELECT count(*) FROM execution WHERE row_count <> 100) AS odd_counts"
    )
    assert dict(counts) == {
        "executions": 100,
        "rows": 10_000,
        "keys": 8,
        "workflows": 4,
        "used_keys": 8,
        "used_workflows": 4,
        "odd_counts": 0,
    }
    # Every execution has its positions 0..99 once; the constraints and indexes are back.
    per_execution = await _fetch(
        "SELECT count(*) AS n, min(position) AS lo, max(position) AS hi, "
        "count(DISTINCT position) AS distinct_positions FROM execution_row GROUP BY execution"
    )
    assert {tuple(r) for r in per_execution} == {(100, 0, 99, 100)}
    indexes = {r["indexname"] for r in await _fetch(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'execution_row'"
    )}  # fmt: skip
    assert indexes >= {
        "execution_row_pkey",
        "unique_execution_position",
        "execution_row_execution",
        "execution_row_failed",
    }
    foreign = await _fetch(
        "SELECT conname FROM pg_constraint WHERE contype = 'f' "
        "AND (conrelid = 'execution_row'::regclass OR confrelid = 'execution_row'::regclass)"
    )
    assert {r["conname"] for r in foreign} == {
        "execution_row_execution_fkey",
        "sandbox_message_execution_row_fkey",
    }
    # All of the last 2,000 (here: all 100): one in 7 waits for approval, with undecided rows.
    statuses = dict(
        (r["status"], r["n"])
        for r in await _fetch("SELECT status, count(*) AS n FROM execution GROUP BY status")
    )
    assert statuses["pending_approval"] == len([i for i in range(1, 101) if i % 7 == 0])
    [marker] = await _fetch("SELECT * FROM bench_seed")
    assert (marker["seed_version"], marker["executions"], marker["rows_per_execution"]) == (
        seed_large.SEED_VERSION,
        100,
        100,
    )
    assert marker["migration"] == seed_large.migration_level()
    assert seed_large.is_current(marker, 100, 100)
    assert not seed_large.is_current(marker, 100, 99)


async def _arrive(status: str, count: int) -> list[UUID]:
    """New executions, newer than everything (as a running site's would be)."""
    ids = [uuid4() for _ in range(count)]
    await _fetch(
        "INSERT INTO execution (id, workflow, api_key, status, row_count, created_at, "
        "started_at, updated_at) SELECT v.id, 'workflow_bfsi_marketing_template', "
        "(SELECT id FROM api_key ORDER BY name LIMIT 1), $2, 0, now(), now(), now() "
        "FROM unnest($1::uuid[]) AS v(id)",
        ids,
        status,
    )
    return ids


async def test_keyset_pages_a_filtered_list_without_gaps_or_repeats_while_new_ones_arrive(
    seeded: None,
) -> None:
    # Ties on created_at too: the id decides between them.
    await _fetch(
        "UPDATE execution SET created_at = date_trunc('hour', created_at) "
        "WHERE status = 'completed'"
    )
    expected = [
        r["id"]
        for r in await _fetch(
            "SELECT id FROM execution WHERE status = 'completed' ORDER BY created_at DESC, id DESC"
        )
    ]
    assert len(expected) > 30
    filters = executions.ExecutionFilters(status="completed")
    seen: list[UUID] = []
    page = await executions.list_executions(filters, 7, viewer=ANYONE)
    arrived: list[UUID] = []
    while True:
        seen += [e.id for e in page.entries]
        assert all(e.status == "completed" for e in page.entries)
        arrived += await _arrive("completed", 2)  # between two clicks on "Older"
        await _arrive("failed", 1)  # other filters' executions arrive too
        if page.older is None:
            break
        page = await executions.list_executions(filters, 7, older=page.older, viewer=ANYONE)
    assert seen == expected
    assert page.total.count == len(expected) + len(arrived) - 2  # counted before the last 2
    # And back up through "Newer": every page once more, no repeats, up to the first page,
    # which now starts with the newest arrivals.
    last = [e.id for e in page.entries]
    pages_back: list[list[UUID]] = []
    while page.newer is not None:
        page = await executions.list_executions(filters, 7, newer=page.newer, viewer=ANYONE)
        pages_back.append([e.id for e in page.entries])
    shown = [i for p in pages_back[:-1] for i in p]
    assert len(shown) == len(set(shown))
    assert set(seen) - set(last) <= set(shown) | set(pages_back[-1])
    newest = await _fetch(
        "SELECT id FROM execution WHERE status = 'completed' "
        "ORDER BY created_at DESC, id DESC LIMIT 7"
    )
    assert pages_back[-1] == [r["id"] for r in newest]
    assert set(pages_back[-1]) <= set(arrived)
    assert page.older is not None


def _rows_read(plan: dict[str, Any], relation: str) -> int:
    """Table or index entries a plan node (and those under it) read from `relation`: what it
    returned plus what its filter threw away, over all its loops."""
    own = 0
    if plan.get("Relation Name") == relation:
        loops = plan.get("Actual Loops", 1)
        own = (plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)) * loops
    return own + sum(_rows_read(child, relation) for child in plan.get("Plans", []))


async def test_a_filtered_page_reads_its_own_index_past_a_burst_of_new_pending_ones(
    seeded: None,
) -> None:
    # Figure 9's case: ANALYZE saw mostly completed executions, then a burst of executes put
    # thousands of pending ones on top (too few for autovacuum to analyze a large table). The
    # ?status=completed page must still read about one page of entries, not the whole burst.
    connection = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        clone = (
            "INSERT INTO execution (id, workflow, api_key, definition, status, row_count, "
            "current_step, step_results, created_at, started_at, updated_at) "
            "SELECT gen_random_uuid(), e.workflow, e.api_key, e.definition, $1, 1, 0, '[]', "
            "now() + g * $2::interval, now(), now() "
            "FROM (SELECT * FROM execution LIMIT 1) AS e, generate_series(1, $3) AS g"
        )
        await connection.execute(clone, "completed", timedelta(milliseconds=-1), 20_000)
        await connection.execute("VACUUM ANALYZE execution")  # what autovacuum did by then
        await connection.execute("ALTER TABLE execution SET (autovacuum_enabled = false)")
        await connection.execute(clone, "pending", timedelta(milliseconds=1), 3_000)
        completed = executions.ExecutionFilters(status="completed")
        read = {}
        for who, viewer in (("admin", ADMIN), ("reviewer", ANYONE)):
            query = executions._ListQuery.of(completed, viewer)
            raw = await connection.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {query.page()}", *query.args, 51
            )
            [plan] = json.loads(raw)
            read[who] = _rows_read(plan["Plan"], "execution")
        listed = await executions.list_executions(completed, 50, viewer=ANYONE)
    finally:
        await connection.execute("ALTER TABLE execution RESET (autovacuum_enabled)")
        await connection.close()
    # 51 index entries, then those 51 executions by id.
    assert read == {"admin": 102, "reviewer": 102}
    assert len(listed.entries) == 50 and {e.status for e in listed.entries} == {"completed"}


async def test_counts_stop_at_the_cap(seeded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(list_pages, "COUNT_CAP", 40)
    monkeypatch.setattr(list_pages, "_over_cap", {})
    everything = await executions.list_executions(executions.ExecutionFilters(), 50, viewer=ANYONE)
    waiting = await executions.list_executions(
        executions.ExecutionFilters(status="pending_approval"), 50, viewer=ANYONE
    )
    assert (everything.total.count, everything.total.capped, everything.total.label) == (
        40,
        True,
        "40+",
    )
    assert (waiting.total.capped, waiting.total.label) == (False, "14")


async def test_a_count_past_the_cap_is_remembered_a_while_and_one_under_it_never(
    seeded: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(list_pages, "COUNT_CAP", 40)
    monkeypatch.setattr(list_pages, "_over_cap", {})
    everything, failed = executions.ExecutionFilters(), executions.ExecutionFilters(status="failed")

    async def labels() -> tuple[str, str]:
        pages = [
            await executions.list_executions(f, 50, viewer=ANYONE) for f in (everything, failed)
        ]
        return pages[0].total.label, pages[1].total.label

    [[failing]] = await _fetch("SELECT count(*) FROM execution WHERE status = 'failed'")
    assert await labels() == ("40+", str(failing))
    # All but the newest 30 go (their key deleted, say): the failed count, under the cap, is
    # exact at once; the one that was past it says 40+ until OVER_CAP_SECONDS have passed.
    await _fetch(
        "DELETE FROM execution WHERE id NOT IN "
        "(SELECT id FROM execution ORDER BY created_at DESC, id DESC LIMIT 30)"
    )
    [[failing]] = await _fetch("SELECT count(*) FROM execution WHERE status = 'failed'")
    assert await labels() == ("40+", str(failing))
    monkeypatch.setattr(list_pages, "OVER_CAP_SECONDS", 0.0)
    assert await labels() == ("30", str(failing))
    assert list_pages._over_cap == {}


async def test_the_approvals_queue_pages_oldest_first(seeded: None) -> None:
    expected = [
        r["id"]
        for r in await _fetch(
            "SELECT id FROM execution WHERE status = 'pending_approval' ORDER BY created_at, id"
        )
    ]
    first = await approvals.list_waiting(ANYONE, 5)
    second = await approvals.list_waiting(ANYONE, 5, newer=first.newer)
    third = await approvals.list_waiting(ANYONE, 5, newer=second.newer)
    back = await approvals.list_waiting(ANYONE, 5, older=third.older)

    assert [e.id for e in first.entries + second.entries + third.entries] == expected
    assert first.older is None and third.newer is None
    assert [e.id for e in back.entries] == expected[5:10]
    assert all(e.row_count == 100 and e.decided == 0 for e in first.entries)
    failing = await _fetch(
        "SELECT count(*) AS n FROM execution_row WHERE execution = $1 "
        "AND compliance_status = 'failed'",
        first.entries[0].id,
    )
    assert first.entries[0].failing == failing[0]["n"] == 4
    assert first.total.label == "14"


def test_a_position_survives_its_link() -> None:
    position = list_pages.Position(
        created_at=list_pages._EPOCH + timedelta(days=20_000, microseconds=7), id=uuid4()
    )
    assert list_pages.decode_position(position.encode(), "older") == position


async def test_the_queue_page_links_to_newer_and_older_waiting_executions(
    reviewer_client: Any,
) -> None:
    await seed_large.seed(os.environ["DATABASE_URL"], 400, 2, log=False)
    waiting = [
        str(r["id"])
        for r in await _fetch(
            "SELECT id FROM execution WHERE status = 'pending_approval' ORDER BY created_at, id"
        )
    ]
    assert len(waiting) == 57

    first = (await reviewer_client.get("/dashboard/approvals")).text
    newer = re.search(r'<a rel="next" href="\?(newer=[0-9]+_[0-9a-f]{32})">Later →</a>', first)
    assert newer and "← Sooner" not in first
    assert "57 executions, soonest deadline first, then oldest" in first
    second = (await reviewer_client.get("/dashboard/approvals?" + newer[1])).text
    older = re.search(r'<a rel="prev" href="\?(older=[0-9]+_[0-9a-f]{32})">← Sooner</a>', second)
    assert older and "Later →" not in second
    back = (await reviewer_client.get("/dashboard/approvals?" + older[1])).text

    review = r'href="/dashboard/approvals/([0-9a-f-]{36})"'
    assert re.findall(review, first) == waiting[:50]
    assert re.findall(review, second) == waiting[50:]
    assert re.findall(review, back) == waiting[:50]
    bad = await reviewer_client.get("/dashboard/approvals?older=yesterday")
    assert bad.status_code == 400 and "older must be a link from this page" in bad.text
