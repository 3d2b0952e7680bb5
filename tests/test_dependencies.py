"""The locked dependency set (issue 18): uv.lock agrees with pyproject.toml, the venv holds
exactly the lock, uv itself is bootstrapped from the lock, and `make audit` fails only on
vulnerabilities that have a fix."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"


def uv(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(Path(sys.prefix)),
        "UV_PYTHON_DOWNLOADS": "never",
    }
    return subprocess.run(
        [UV, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=120
    )


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), ROOT / "scripts" / name)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def locked_version(name: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return str(next(p["version"] for p in lock["package"] if p["name"] == name))


def test_the_lock_matches_pyproject() -> None:
    result = uv("lock", "--check")
    assert result.returncode == 0, result.stderr


def test_a_range_the_lock_does_not_satisfy_fails_the_check(tmp_path: Path) -> None:
    shutil.copy(ROOT / "uv.lock", tmp_path)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"msgspec>=0.19,<1"' in pyproject
    (tmp_path / "pyproject.toml").write_text(
        pyproject.replace('"msgspec>=0.19,<1"', '"msgspec>=0.19,<0.20"')
    )
    result = uv("lock", "--check", cwd=tmp_path)
    assert result.returncode == 1
    assert "needs to be updated" in result.stderr


def test_the_venv_holds_exactly_the_lock() -> None:
    result = uv("sync", "--locked", "--extra", "dev", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Would make no changes" in result.stderr + result.stdout


def test_uv_is_bootstrapped_from_the_lock_with_every_hash() -> None:
    line = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "uv-requirement.py")],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    version = locked_version("uv")
    assert line[0] == f"uv=={version}"
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    entry = next(p for p in lock["package"] if p["name"] == "uv")
    files = len(entry["wheels"]) + (1 if "sdist" in entry else 0)
    assert len(line) == 1 + files and all(h.startswith("--hash=sha256:") for h in line[1:])
    installed = uv("--version").stdout.split()
    assert installed[1] == version


def test_msgspec_is_the_locked_version() -> None:
    from importlib.metadata import version

    assert version("msgspec") == locked_version("msgspec")


def report(*vulns: dict[str, object]) -> dict[str, object]:
    return {"dependencies": [{"name": "pkg", "version": "1.0", "vulns": list(vulns)}]}


def test_audit_fails_on_a_vulnerability_with_a_fix() -> None:
    audit = script("audit.py")
    failures, notes = audit.evaluate(
        report({"id": "GHSA-1", "aliases": ["CVE-1"], "fix_versions": ["1.1"]}), {}
    )
    assert failures == ["pkg 1.0: GHSA-1 is fixed in 1.1: run make upgrade"]
    assert notes == []


def test_audit_allows_a_named_exception_and_one_without_a_fix() -> None:
    audit = script("audit.py")
    failures, notes = audit.evaluate(
        report(
            {"id": "GHSA-1", "aliases": ["CVE-1"], "fix_versions": ["1.1"]},
            {"id": "GHSA-2", "aliases": [], "fix_versions": []},
        ),
        {"CVE-1": "only in the CLI's unused XML path", "GHSA-9": "old"},
    )
    assert failures == []
    assert notes == [
        "pkg 1.0: GHSA-1 ignored: only in the CLI's unused XML path",
        "pkg 1.0: GHSA-2 has no fixed release yet",
        "audit-ignore.toml: GHSA-9 matches nothing any more",
    ]


def test_an_exception_needs_a_reason(tmp_path: Path) -> None:
    audit = script("audit.py")
    ignore = tmp_path / "audit-ignore.toml"
    ignore.write_text('[[ignore]]\nid = "GHSA-1"\n')
    with pytest.raises(SystemExit, match="needs an id and a reason"):
        audit.load_ignores(ignore)
    assert audit.load_ignores(ROOT / "audit-ignore.toml") == {}
