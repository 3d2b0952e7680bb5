"""`pip install .` (not editable) into a fresh venv gives a `flowgate` whose `migrate` seeds the
BFSI template: the template is package data, not a file found relative to the source tree.

The venv borrows the dependencies of the test run's own venv through a .pth line (only the
build backend may come from the index, when uv's cache does not have it), and the checkout is
copied first so the build leaves nothing in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
SKIPPED = shutil.ignore_patterns(
    ".venv", ".git", ".dev", ".ci", "node_modules", "__pycache__", "*.egg-info", "build",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", "tests", "bench", ".schemathesis",
)  # fmt: skip


def _url(database: str) -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, "", ""))


@pytest.fixture
async def fresh_database() -> AsyncIterator[str]:
    name = f"flowgate_install_{os.getpid()}"
    admin = await asyncpg.connect(_url("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _url(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, **kwargs
    )  # type: ignore[call-overload]
    assert result.returncode == 0, result.stdout + result.stderr
    return result  # type: ignore[no-any-return]


async def test_a_non_editable_install_migrates_and_seeds_the_bfsi_template(
    tmp_path: Path, fresh_database: str
) -> None:
    source = tmp_path / "source"
    shutil.copytree(REPOSITORY, source, ignore=SKIPPED)
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    # The dependencies from this venv, appended after the new venv's own site-packages; the
    # .pth files in there (the editable install's) are not processed.
    Path(site.stdout.strip(), "_flowgate_deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    # uv builds the wheel (setuptools from its cache when it can, else from the index).
    uv = Path(sys.executable).with_name("uv")
    install = [uv, "pip", "install", "--quiet", "--no-deps", "--python", python, source]
    if subprocess.run([*install, "--offline"], capture_output=True, check=False).returncode:
        _run(*install)
    shutil.rmtree(source)  # the installed copy must stand on its own

    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "PICCOLO"))
    }
    env["DATABASE_URL"] = fresh_database
    where = _run(python, "-c", "import web.domain; print(web.domain.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout
    migrated = _run(venv / "bin" / "flowgate", "migrate", cwd=tmp_path, env=env)
    assert "seeded workflow workflow_bfsi_marketing_template" in migrated.stdout

    connection = await asyncpg.connect(fresh_database)
    try:
        row = await connection.fetchrow(
            "SELECT name, active FROM workflow WHERE id = 'workflow_bfsi_marketing_template'"
        )
    finally:
        await connection.close()
    assert row is not None and row["active"]
