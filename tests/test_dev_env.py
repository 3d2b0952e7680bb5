"""The second terminal: `flowgate` run from a shell that has none of `make run`'s variables finds
the checkout's services and local settings in .dev/env, and says in one line when a service
does not answer. The .dev/env written here points at the test database, never the dev one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.live_server import free_port
from web.domain.tables import ApiKey

FLOWGATE = str(Path(sys.executable).with_name("flowgate"))


def _clean_environment() -> dict[str, str]:
    """What a new terminal has: no service URLs, no FLOWGATE_* variable."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("FLOWGATE_", "PICCOLO_"))
        and name not in {"DATABASE_URL", "REDIS_URL"}
    }


def _checkout(tmp_path: Path, database_url: str, redis_url: str) -> Path:
    """A folder that looks like a checkout after `make run`: piccolo_conf.py and .dev/env."""
    (tmp_path / "piccolo_conf.py").write_text("# marks a flowgate checkout\n")
    (tmp_path / ".dev").mkdir()
    (tmp_path / ".dev" / "env").write_text(
        f"DATABASE_URL='{database_url}'\nREDIS_URL='{redis_url}'\n"
        "FLOWGATE_SECRET_KEY='test-secret'\n"
        "FLOWGATE_WEBHOOK_ALLOW_HTTP='true'\nFLOWGATE_WEBHOOK_ALLOW_PRIVATE='true'\n"
    )
    (tmp_path / "sub").mkdir()
    return tmp_path


def flowgate(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLOWGATE, *args],
        cwd=cwd,
        env=_clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_readme_commands_work_from_a_clean_shell_in_the_checkout(
    tmp_path: Path,
) -> None:
    checkout = _checkout(tmp_path, os.environ["DATABASE_URL"], os.environ["REDIS_URL"])

    created = flowgate(
        checkout / "sub", "keys", "create", "--name", "test",
        "--webhook-url", "http://127.0.0.1:9000/hook", "--json",
    )  # fmt: skip

    assert created.returncode == 0, created.stderr
    assert created.stderr == ""  # no warning about FLOWGATE_SECRET_KEY, no Piccolo warning
    key = json.loads(created.stdout)
    assert key["webhookUrl"] == "http://127.0.0.1:9000/hook"
    assert await ApiKey.count().where(ApiKey.name == "test") == 1  # in the test database

    listed = flowgate(checkout, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [key["id"]]


def test_postgresql_out_of_reach_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    checkout = _checkout(
        tmp_path, f"postgresql://postgres@127.0.0.1:{port}/flowgate", os.environ["REDIS_URL"]
    )

    for command in (["keys", "list"], ["migrate"], ["serve"], ["worker"]):
        result = flowgate(checkout, *command)

        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr == (
            f"cannot reach PostgreSQL at 127.0.0.1:{port}: start it with make run, "
            "or set DATABASE_URL\n"
        ), command
        assert result.stdout == ""


def test_redis_out_of_reach_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = free_port()
    checkout = _checkout(tmp_path, os.environ["DATABASE_URL"], f"redis://127.0.0.1:{port}/0")

    result = flowgate(checkout, "worker")

    assert result.returncode == 1
    assert result.stderr == (
        f"cannot reach Redis at 127.0.0.1:{port}: start it with make run, or set REDIS_URL\n"
    )


def test_services_up_writes_the_env_file_the_command_reads(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    environment = {
        **_clean_environment(),
        "DATABASE_URL": os.environ["DATABASE_URL"],  # running servers: nothing is started
        "REDIS_URL": os.environ["REDIS_URL"],
        "FLOWGATE_DEV_DIR": str(dev),
    }
    root = Path(__file__).resolve().parent.parent
    up = subprocess.run(
        ["scripts/services.sh", "up"], cwd=root, env=environment,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    assert f"export DATABASE_URL='{os.environ['DATABASE_URL']}'" in up.stdout

    from web.settings import read_env_file

    written = read_env_file(dev / "env")
    assert written == {
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "REDIS_URL": os.environ["REDIS_URL"],
        "FLOWGATE_SECRET_KEY": (dev / "secret-key").read_text().strip(),
        "FLOWGATE_WEBHOOK_ALLOW_HTTP": "true",
        "FLOWGATE_WEBHOOK_ALLOW_PRIVATE": "true",
    }
    assert len(written["FLOWGATE_SECRET_KEY"]) == 64
    assert (dev / "env").stat().st_mode & 0o077 == 0  # it holds the secret key

    listed = subprocess.run(
        [FLOWGATE, "keys", "list"], cwd=tmp_path,
        env={**_clean_environment(), "FLOWGATE_DEV_ENV": str(dev / "env")},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr == ""


async def test_a_database_never_migrated_says_to_migrate(tmp_path: Path) -> None:
    import asyncpg

    base, name = os.environ["DATABASE_URL"].rsplit("/", 1)
    empty = f"{name}_empty"
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{empty}"')
        await admin.execute(f'CREATE DATABASE "{empty}"')
        checkout = _checkout(tmp_path, f"{base}/{empty}", os.environ["REDIS_URL"])

        result = flowgate(checkout, "keys", "list")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{empty}" WITH (FORCE)')
        await admin.close()

    assert result.returncode == 1
    assert result.stderr.endswith("has no flowgate tables: run flowgate migrate (make run does)\n")
    assert result.stderr.count("\n") == 1 and f"'{empty}'" in result.stderr
