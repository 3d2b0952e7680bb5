"""`make audit`: pip-audit over the locked set, failing only on what can be fixed.

    python scripts/audit.py REQUIREMENTS.txt audit-ignore.toml

REQUIREMENTS.txt is `uv export` of uv.lock (exact versions and hashes), so what is audited is
exactly what `make install` installs. pip-audit asks PyPI's advisory data about each pin. A
vulnerability with a fixed release fails the run (exit 1) unless audit-ignore.toml names it with
a reason; one without a fixed release is printed and does not fail (there is nothing to upgrade
to yet). An exception that no longer matches anything is reported, so the file does not rot.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any


def load_ignores(path: Path) -> dict[str, str]:
    """{advisory id: reason}; an entry without both is refused."""
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    ignores: dict[str, str] = {}
    for entry in data.get("ignore", []):
        vuln_id, reason = entry.get("id"), str(entry.get("reason", "")).strip()
        if not vuln_id or not reason:
            raise SystemExit(f"audit: {path}: every [[ignore]] needs an id and a reason: {entry}")
        ignores[vuln_id] = reason
    return ignores


def evaluate(report: dict[str, Any], ignores: dict[str, str]) -> tuple[list[str], list[str]]:
    """(failures, notes) for a pip-audit JSON report."""
    failures: list[str] = []
    notes: list[str] = []
    used: set[str] = set()
    for dep in report.get("dependencies", []):
        for vuln in dep.get("vulns", []):
            ids = [vuln["id"], *vuln.get("aliases", [])]
            line = f"{dep['name']} {dep['version']}: {vuln['id']}"
            fixes = vuln.get("fix_versions") or []
            matched = next((i for i in ids if i in ignores), None)
            if matched:
                used.add(matched)
                notes.append(f"{line} ignored: {ignores[matched]}")
            elif fixes:
                failures.append(f"{line} is fixed in {', '.join(fixes)}: run make upgrade")
            else:
                notes.append(f"{line} has no fixed release yet")
    notes += [f"audit-ignore.toml: {i} matches nothing any more" for i in ignores if i not in used]
    return failures, notes


def main() -> int:
    requirements, ignore_file = Path(sys.argv[1]), Path(sys.argv[2])
    ignores = load_ignores(ignore_file)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip_audit",
                "--requirement",
                str(requirements),
                "--require-hashes",
                "--disable-pip",
                "--vulnerability-service",
                "pypi",
                "--progress-spinner",
                "off",
                "--format",
                "json",
                "--output",
                str(out),
            ],
            check=False,
        )
        if not out.exists():
            print(
                f"audit: pip-audit failed (exit {run.returncode}) before reporting", file=sys.stderr
            )
            return 2
        report = json.loads(out.read_text())
    failures, notes = evaluate(report, ignores)
    for line in notes:
        print(f"audit: {line}")
    for line in failures:
        print(f"audit: FAIL {line}", file=sys.stderr)
    count = len(report.get("dependencies", []))
    print(f"audit: {count} locked packages checked, {len(failures)} fixable vulnerabilities")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
