"""The `flowgate` command: serve, worker, migrate, keys, workflows, webhooks, users,
suppressions, audit. Imports
the worker lazily (only the `worker` command needs it), so the CLI stays usable on a web-only
host."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec

os.environ.setdefault("PICCOLO_CONF", "piccolo_conf")

from web import services
from web.domain import (
    api_keys,
    audit,
    clock,
    queue,
    retention,
    suppressions,
    users,
    webhooks,
    workflow_files,
    workflows,
)
from web.domain.actors import Actor
from web.domain.errors import DomainError
from web.settings import SettingsError, apply_dev_env, get_settings


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


def _datetime(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {value!r}") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time zone, e.g. 2026-01-01T00:00:00Z")
    return parsed


def _age(value: str) -> timedelta:
    try:
        return retention.parse_age(value)
    except DomainError:
        raise argparse.ArgumentTypeError(
            f"expected {retention.AGE_FORMAT}, got {value!r}"
        ) from None


def _key_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, UUID) else v)
        for k, v in row.items()
    }


async def migrate() -> int:
    from piccolo.apps.migrations.commands.forwards import run_forwards

    result = await run_forwards(app_name="domain")
    if not result.success:
        print(f"migration failed: {result.message}", file=sys.stderr)
        return 1
    if await workflows.seed_workflows():
        print(f"seeded workflow {workflows.BFSI_WORKFLOW_ID}")
    return 0


async def keys_create(args: argparse.Namespace) -> int:
    settings = api_keys.KeySettings(
        name=args.name,
        monthly_limit=args.monthly_limit,
        expires_at=args.expires_at,
        allowed_workflows=args.workflow,
        webhook_url=args.webhook_url,
        webhook_events=args.webhook_event,
    )
    new = await api_keys.create_key(settings, actor=Actor.cli(), webhook_secret=args.webhook_secret)
    if args.json:
        print(
            json.dumps(
                {
                    "id": str(new.id),
                    "name": new.name,
                    "key": new.secret,
                    "prefix": new.prefix,
                    "monthlyLimit": new.monthly_limit,
                    "expiresAt": new.expires_at.isoformat() if new.expires_at else None,
                    "allowedWorkflows": new.allowed_workflows,
                    "webhookUrl": new.webhook_url,
                    "webhookEvents": new.webhook_events,
                    "webhookSecretSet": new.webhook_secret_set,
                    # Shown once, like the key: listings never show it again.
                    "webhookSecret": args.webhook_secret,
                }
            )
        )
    else:
        print(f"Created API key {new.name!r} (id {new.id}, prefix {new.prefix}).")
        print("Save it now, it will not be shown again:")
        print(new.secret)
    return 0


async def keys_list(args: argparse.Namespace) -> int:
    rows = await api_keys.list_keys()
    if args.json:
        print(json.dumps([_key_json(msgspec.structs.asdict(row)) for row in rows]))
        return 0
    if not rows:
        print("No API keys yet: flowgate keys create --name NAME")
    for row in rows:
        expires = row.expires_at.isoformat() if row.expires_at else "never"
        print(
            f"{row.id}  {row.prefix}…  {row.status:8}  limit {row.monthly_limit}/month  "
            f"expires {expires}  {row.name}"
        )
    return 0


async def keys_revoke(args: argparse.Namespace) -> int:
    key_id = _uuid(args.id, "API key id")
    redis = queue.connect(get_settings().redis_url, 5.0)
    try:
        await api_keys.revoke_key(redis, key_id, actor=Actor.cli())
    finally:
        await redis.aclose()
    print(f"revoked {key_id}")
    return 0


async def webhooks_list(args: argparse.Namespace) -> int:
    execution_id = _uuid(args.execution, "execution id")
    events = await webhooks.list_deliveries(execution_id)
    if args.json:
        print(
            json.dumps(
                [
                    _key_json({**msgspec.structs.asdict(e), "attempts_log": None})
                    | {
                        "attempts_log": [
                            _key_json(msgspec.structs.asdict(a)) for a in e.attempts_log
                        ]
                    }
                    for e in events
                ]
            )
        )
        return 0
    if not events:
        print("No webhook events for this execution (is a webhook URL set on its key?)")
    for event in events:
        print(f"{event.id}  #{event.sequence} {event.event:28} {event.status}")
        for attempt in event.attempts_log:
            outcome = attempt.status_code or attempt.error
            print(
                f"    attempt {attempt.attempt_number}  {attempt.created_at.isoformat()}  "
                f"{outcome}  {attempt.duration_ms} ms  {attempt.url}"
            )
    return 0


async def webhooks_redeliver(args: argparse.Namespace) -> int:
    event_id = _uuid(args.event_id, "webhook event id")
    redis = queue.connect(get_settings().redis_url, 5.0)
    try:
        await webhooks.redeliver_event(redis, event_id, actor=Actor.cli())
    finally:
        await redis.aclose()
    print(f"queued {event_id} for delivery again (same webhook-id)")
    return 0


async def workflows_list(args: argparse.Namespace) -> int:
    rows = await workflows.list_workflows()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": row.id,
                        "name": row.name,
                        "active": row.active,
                        "steps": [step.get("type") for step in row.steps],
                        "updatedAt": row.updated_at.isoformat(),
                    }
                    for row in rows
                ]
            )
        )
        return 0
    if not rows:
        print("No workflows yet: flowgate workflows import FILE.yaml")
    for row in rows:
        state = "active" if row.active else "inactive"
        steps = " -> ".join(str(step.get("type")) for step in row.steps)
        print(f"{row.id}  {state:8}  {row.name}  ({steps})")
    return 0


async def workflows_import(args: argparse.Namespace) -> int:
    """Create or update a workflow from a YAML or JSON file; every problem on its own line."""
    try:
        definition = workflow_files.read_definition_file(Path(args.file))
        created = await workflows.import_workflow(definition, actor=Actor.cli())
    except workflow_files.InvalidDefinition as exc:
        for problem in exc.problems:
            print(f"error: {args.file}: {problem}", file=sys.stderr)
        return 1
    print(f"{'created' if created else 'updated'} workflow {definition['id']}")
    return 0


async def workflows_export(args: argparse.Namespace) -> int:
    definition = await workflows.get_definition(args.id)
    sys.stdout.write(workflow_files.dump_definition(definition, args.format))
    return 0


def _uuid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise DomainError(f"not a valid {what}: {value!r}") from None


async def audit_list(args: argparse.Namespace) -> int:
    filters = audit.AuditFilters(
        since=args.since,
        until=args.until,
        actor=args.actor,
        action=args.action,
        execution_id=None if args.execution is None else _uuid(args.execution, "execution id"),
    )
    async for entry in audit.iter_entries(filters):
        if args.json:
            print(json.dumps(entry.to_json(), ensure_ascii=False))
            continue
        target = f"{entry.target_type}:{entry.target_id}" if entry.target_type else "-"
        comment = f"  {entry.comment!r}" if entry.comment else ""
        print(
            f"{entry.id:>6}  {clock.iso(entry.at)}  {entry.actor:30} {entry.action:22} "
            f"{target}{comment}"
        )
    return 0


async def audit_verify(args: argparse.Namespace) -> int:
    result = await audit.verify()
    if not result.ok:
        print(
            f"audit trail BROKEN at entry {result.bad_entry}: {result.problem} "
            f"({result.checked} entries before it match)",
            file=sys.stderr,
        )
        return 1
    if args.anchor:
        entry_id, _, kept = args.anchor.partition(":")
        if not entry_id.isdigit() or len(kept) != 64:
            raise DomainError(
                f"--anchor must be ID:HASH as `verify` printed it; got {args.anchor!r}"
            )
        now = await audit.anchored_hash(int(entry_id))
        if now != kept.lower():
            print(
                f"audit trail REWRITTEN: entry {entry_id} "
                + ("no longer exists" if now is None else "does not match the anchor kept"),
                file=sys.stderr,
            )
            return 1
    since = "" if result.start == 1 else f" (from entry {result.start}, after the last purge)"
    print(f"audit trail intact: {result.checked} entries checked{since}")
    print(f"head: entry {result.head_id} {result.head_hash}")
    return 0


async def users_create(args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        generated = False
    else:
        password = users.generate_password()
        generated = True
    user = await users.create_user(args.email, password, args.role, actor=Actor.cli())
    print(f"Created {user.role} {user.email} (id {user.id}).")
    if generated:
        print(f"Password (shown once): {password}")
    return 0


async def users_set_password(args: argparse.Namespace) -> int:
    """A new password for a user, which also lifts a lockout of their email."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = users.generate_password()
    redis = queue.connect(get_settings().redis_url, 5.0)
    try:
        user = await users.set_password(redis, args.email, password)
    finally:
        await redis.aclose()
    print(f"Set a new password for {user.role} {user.email} (and unlocked the account).")
    if not args.password_stdin:
        print(f"Password (shown once): {password}")
    return 0


async def purge(args: argparse.Namespace) -> int:
    age: timedelta = args.older_than or timedelta(days=get_settings().retention_days)
    cutoff = retention.cutoff_for(age)
    report = await retention.purge_personal_data(cutoff, dry_run=args.dry_run)
    verb = "would remove (dry run, nothing changed)" if args.dry_run else "removed"
    print(f"{verb}: personal data of executions that ended before {clock.iso(cutoff)}")
    for kind, count in report.counts.items():
        print(f"  {kind:<20} {count}")
    return 0


async def dev_admin(_: argparse.Namespace) -> int:
    """For `make run`: on an empty database, create a demo admin and print its login once."""
    if await users.count_users():
        return 0
    password = users.generate_password()
    user = await users.create_user("admin@flowgate.local", password, "admin", actor=Actor.cli())
    print(f"    Dashboard login {user.email} / {password}   (shown once)")
    return 0


async def dev_key(args: argparse.Namespace) -> int:
    """For `make run`: reuse the demo key saved in PATH while it still works, else make one."""
    path = Path(args.path)
    if path.exists():
        secret = path.read_text().strip()
        try:
            await api_keys.authenticate_usable(f"Bearer {secret}")
            print(secret)
            return 0
        except DomainError:
            pass
    new = await api_keys.create_key(api_keys.KeySettings(name="demo (make run)"), actor=Actor.cli())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new.secret + "\n")
    path.chmod(0o600)
    print(new.secret)
    return 0


SERVERS = ("granian", "uvicorn")
GRACEFUL_SHUTDOWN_SECONDS = 10


def serve(args: argparse.Namespace) -> int:
    """The web server: granian by default (README "Performance", figure 4), uvicorn on request.
    Both finish the requests in flight on SIGTERM (for up to 10 s) before they stop. Worker
    processes share their metrics through a directory (prometheus-client's multiprocess mode);
    uvicorn with one worker runs the app in this process, which keeps them in memory."""
    settings = get_settings()
    port = args.port or settings.port
    in_process = args.server == "uvicorn" and args.workers == 1
    with metrics_dir(settings.metrics_dir, enabled=not in_process):
        _serve(args, port)
    return 0


@contextmanager
def metrics_dir(chosen: str | None, *, enabled: bool) -> Iterator[None]:
    """PROMETHEUS_MULTIPROC_DIR for the server's worker processes, which write their values to
    files there; a scrape of any of them sums them all. FLOWGATE_METRICS_DIR when set (the value
    files of earlier runs are removed first: their processes are gone), else a new temporary
    directory, removed when the server stops."""
    if not enabled:
        yield
        return
    owned = chosen is None
    path = Path(tempfile.mkdtemp(prefix="flowgate-metrics-")) if owned else Path(str(chosen))
    if not owned:
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    try:
        yield
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if owned:
            shutil.rmtree(path, ignore_errors=True)


def _serve(args: argparse.Namespace, port: int) -> None:
    if args.server == "uvicorn":
        import uvicorn

        uvicorn.run(
            "web.app:create_served_app",
            factory=True,
            proxy_headers=False,  # web.forwarded does it, as under granian
            host=args.host,
            port=port,
            workers=args.workers,
            log_level="warning",
            loop="uvloop",  # as granian's and the workers' (web.process)
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        return
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    # Fresh interpreters, not forks of this one: prometheus-client picks its multiprocess mode
    # when it is imported, which this process did before PROMETHEUS_MULTIPROC_DIR was set.
    multiprocessing.set_start_method("spawn", force=True)
    Granian(
        "web.app:create_served_app",
        factory=True,
        interface=Interfaces.ASGI,
        address=args.host,
        port=port,
        workers=args.workers,
        log_level=LogLevels.warning,
        loop=Loops.uvloop,  # as the workers' (web.process)
        workers_kill_timeout=GRACEFUL_SHUTDOWN_SECONDS,
    ).serve()


async def suppressions_add(args: argparse.Namespace) -> int:
    phone = suppressions.normalise(args.phone)
    added = await suppressions.add(phone, args.reason, suppressions.Source.CLI)
    print(f"{'added' if added else 'already listed, reason updated:'} {phone}")
    return 0


async def suppressions_remove(args: argparse.Namespace) -> int:
    await suppressions.remove(args.phone)
    print(f"removed {suppressions.normalise(args.phone)}")
    return 0


async def suppressions_list(args: argparse.Namespace) -> int:
    listed = await suppressions.list_suppressions(args.search or "", limit=1_000_000)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "phone": row.phone,
                        "reason": row.reason,
                        "source": row.source,
                        "createdAt": clock.iso(row.created_at),
                    }
                    for row in listed
                ]
            )
        )
        return 0
    if not listed:
        print("The suppression list is empty")
    for row in listed:
        print(f"{row.phone:16}  {row.source:9}  {row.created_at.isoformat()}  {row.reason or ''}")
    return 0


async def suppressions_import(args: argparse.Namespace) -> int:
    """`phone[,reason]` lines; bad lines are listed on stderr and do not stop the rest."""
    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    report = await suppressions.import_csv(text)
    for line, problem in report.bad_lines:
        print(f"error: {args.file}:{line}: {problem}", file=sys.stderr)
    print(
        f"imported {report.added + report.updated} number(s): {report.added} added, "
        f"{report.updated} already listed (reason updated); {len(report.bad_lines)} bad line(s)"
    )
    return 1 if report.bad_lines and not (report.added + report.updated) else 0


def worker(_: argparse.Namespace) -> int:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Its values would land among the web processes' and be summed into their /metrics.
        print(
            "PROMETHEUS_MULTIPROC_DIR is set: unset it for flowgate worker (its metrics are its "
            "own, on FLOWGATE_WORKER_METRICS_PORT; flowgate serve sets the directory itself)",
            file=sys.stderr,
        )
        return 1
    from worker.settings import run_workers

    run_workers()  # the runs' loop and the webhook deliveries' loop
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the web server (public API and dashboard)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: FLOWGATE_PORT or 3001")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--server", choices=SERVERS, default="granian")
    p.set_defaults(handler=serve)

    p = sub.add_parser("worker", help="run a worker: workflow runs and webhook deliveries")
    p.set_defaults(handler=worker)

    p = sub.add_parser("migrate", help="apply database migrations and seed the BFSI workflow")
    p.set_defaults(async_handler=lambda _: migrate())

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    p = keys.add_parser("create", help="create a key and print it once")
    p.add_argument("--name", required=True)
    p.add_argument("--monthly-limit", type=int, default=api_keys.DEFAULT_MONTHLY_LIMIT)
    p.add_argument("--expires-at", type=_datetime, default=None, metavar="ISO8601")
    p.add_argument(
        "--workflow",
        action="append",
        default=[],
        metavar="ID",
        help="allow only this workflow (repeat for several; default: all)",
    )
    p.add_argument("--webhook-url", default=None)
    p.add_argument(
        "--webhook-event",
        action="append",
        default=None,
        metavar="EVENT",
        choices=api_keys.WEBHOOK_EVENTS,
        help="repeat for several; default: all four",
    )
    p.add_argument("--webhook-secret", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(async_handler=keys_create)

    p = keys.add_parser("list", help="list keys (never the secrets)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(async_handler=keys_list)

    p = keys.add_parser("revoke", help="revoke a key by id")
    p.add_argument("id")
    p.set_defaults(async_handler=keys_revoke)

    hooks = sub.add_parser("webhooks", help="webhook delivery log").add_subparsers(
        dest="webhooks_command", required=True
    )
    p = hooks.add_parser("list", help="events and attempts of one execution")
    p.add_argument("--execution", required=True, metavar="ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(async_handler=webhooks_list)
    p = hooks.add_parser("redeliver", help="send an event again (same webhook-id)")
    p.add_argument("event_id", metavar="EVENT_ID")
    p.set_defaults(async_handler=webhooks_redeliver)

    flows = sub.add_parser("workflows", help="workflows as YAML or JSON files").add_subparsers(
        dest="workflows_command", required=True
    )
    p = flows.add_parser("list", help="list workflows")
    p.add_argument("--json", action="store_true")
    p.set_defaults(async_handler=workflows_list)
    p = flows.add_parser("import", help="create or update a workflow from a .yaml or .json file")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(async_handler=workflows_import)
    p = flows.add_parser("export", help="print a workflow as YAML (or JSON)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.set_defaults(async_handler=workflows_export)

    people = sub.add_parser("users", help="dashboard users").add_subparsers(
        dest="users_command", required=True
    )
    p = people.add_parser("create", help="create a dashboard user")
    p.add_argument("--email", required=True)
    p.add_argument("--role", required=True, choices=["admin", "reviewer"])
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (default: generate one and print it once)",
    )
    p.set_defaults(async_handler=users_create)
    p = people.add_parser(
        "set-password", help="set a new password for a user (and unlock a locked account)"
    )
    p.add_argument("--email", required=True)
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (default: generate one and print it once)",
    )
    p.set_defaults(async_handler=users_set_password)

    opted = sub.add_parser(
        "suppressions", help="the suppression list: numbers that opted out"
    ).add_subparsers(dest="suppressions_command", required=True)
    p = opted.add_parser("add", help="never message this number (E.164, e.g. +919876543210)")
    p.add_argument("phone")
    p.add_argument("--reason")
    p.set_defaults(async_handler=suppressions_add)
    p = opted.add_parser("remove", help="take a number off the list")
    p.add_argument("phone")
    p.set_defaults(async_handler=suppressions_remove)
    p = opted.add_parser("list", help="list the numbers, newest first")
    p.add_argument("--search", help="part of a number or reason")
    p.add_argument("--json", action="store_true")
    p.set_defaults(async_handler=suppressions_list)
    p = opted.add_parser("import", help="add the numbers of a CSV file (header phone[,reason])")
    p.add_argument("file")
    p.set_defaults(async_handler=suppressions_import)
    trail = sub.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    p = trail.add_parser("list", help="audit entries, oldest first")
    p.add_argument("--since", type=_datetime, help="ISO 8601 time, e.g. 2026-12-01T00:00:00Z")
    p.add_argument("--until", type=_datetime, help="ISO 8601 time (entries before it)")
    p.add_argument("--actor", help="an email, key:<prefix>, cli, system, user or api_key")
    p.add_argument("--action", help="an action such as row.edited, or a family: row.*")
    p.add_argument("--execution", metavar="ID", help="one execution's entries, its rows' too")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(async_handler=audit_list)
    p = trail.add_parser(
        "verify", help="check the hash chain (exit 1 naming the first entry that does not match)"
    )
    p.add_argument(
        "--anchor",
        metavar="ID:HASH",
        help="a head kept elsewhere (`head:` of an earlier verify): exit 1 unless it still holds",
    )
    p.set_defaults(async_handler=audit_verify)
    p = sub.add_parser(
        "purge",
        help="remove the personal data of executions that ended long ago (FLOWGATE_RETENTION_DAYS)",
    )
    p.add_argument(
        "--older-than",
        type=_age,
        metavar="AGE",
        help="ended longer ago than this: 90d, 36h (default: FLOWGATE_RETENTION_DAYS days)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the counts, change nothing")
    p.set_defaults(async_handler=purge)

    p = sub.add_parser("dev-admin", help=argparse.SUPPRESS)
    p.set_defaults(async_handler=dev_admin)

    p = sub.add_parser("dev-key", help=argparse.SUPPRESS)
    p.add_argument("path")
    p.set_defaults(async_handler=dev_key)
    return parser


# What `serve` and `worker` need before they start (the web app itself starts without Redis
# and answers 503 until it is back); other commands find out on their first query.
NEEDS = {"serve": ("PostgreSQL",), "worker": ("PostgreSQL", "Redis")}


def main(argv: list[str] | None = None) -> int:
    """Parse, read the settings (the environment, then the checkout's .dev/env), run the command.
    A bad setting, or PostgreSQL/Redis out of reach, is one line on stderr and exit code 1."""
    args = build_parser().parse_args(argv)
    # Piccolo warns on its own when it cannot connect; the one line below says it better.
    warnings.filterwarnings("ignore", message=r".*Unable to connect to database")
    try:
        apply_dev_env()
        settings = get_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 1
    async_handler: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] | None = getattr(
        args, "async_handler", None
    )
    try:
        if async_handler is not None:
            return _run(async_handler(args))
        down = services.unreachable(settings, NEEDS.get(args.command, ()))
        if down:
            print(down[0].advice(), file=sys.stderr)
            return 1
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except DomainError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except Exception as exc:
        advice = services.explain(settings, exc)
        if advice is None:
            raise
        print(advice, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
