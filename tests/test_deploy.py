"""The deployment guide and deploy/ name only what exists: every variable of the environment
file is a setting the code reads (and its value a good one), every `flowgate` command in the
guide and the unit files parses, and the files the guide lists are there."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from web import cli, settings
from web.settings import read_env_file

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
GUIDE = ROOT / "docs" / "deploy.md"
VARIABLE = re.compile(r"\b(FLOWGATE_[A-Z0-9_]+\*?|DATABASE_URL|REDIS_URL|FORWARDED_ALLOW_IPS)")
# The provider credentials a workflow names (examples in the guide), not flowgate settings.
NOT_SETTINGS = {"FLOWGATE_TEST_WHATSAPP_TOKEN"}


def _known_settings() -> set[str]:
    return set(VARIABLE.findall(Path(settings.__file__).read_text()))


def test_every_variable_of_the_environment_file_is_a_setting() -> None:
    names = set(read_env_file(DEPLOY / "flowgate.env.example"))
    assert {"DATABASE_URL", "REDIS_URL", "FLOWGATE_SECRET_KEY", "FORWARDED_ALLOW_IPS"} <= names
    assert names - _known_settings() == set()


def test_the_environment_file_is_a_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(_known_settings()):
        monkeypatch.delenv(name.rstrip("*"), raising=False)
    for name, value in read_env_file(DEPLOY / "flowgate.env.example").items():
        monkeypatch.setenv(name, value)
    settings.get_settings.cache_clear()
    try:
        loaded = settings.get_settings()
    finally:
        settings.get_settings.cache_clear()
    assert loaded.retention_days == 90
    assert loaded.cookie_secure is True
    assert loaded.forwarded_allow_ips == ("10.0.0.0/24",)


def test_every_setting_the_guide_names_exists() -> None:
    known = _known_settings()
    for name in set(VARIABLE.findall(GUIDE.read_text())) - NOT_SETTINGS:
        if name.endswith("*"):
            assert any(k.startswith(name[:-1]) for k in known), name
        else:
            assert name in known, name


def _flowgate_commands(text: str) -> list[list[str]]:
    commands = []
    pattern = r"(?:bin/|`)flowgate ((?:serve|worker|migrate|purge|keys)[^`'\n]*)"
    for match in re.finditer(pattern, text):
        commands.append(shlex.split(match.group(1).split("  ")[0]))
    return commands


def test_every_flowgate_command_of_the_guide_and_the_units_parses() -> None:
    parser = cli.build_parser()
    texts = [GUIDE.read_text()] + [p.read_text() for p in DEPLOY.glob("*.service")]
    commands = [c for text in texts for c in _flowgate_commands(text)]
    assert ["serve", "--host", "0.0.0.0", "--workers", "2"] in commands
    assert ["worker"] in commands and ["migrate"] in commands
    for command in commands:
        if command[:2] == ["keys", "revoke"]:
            command = ["keys", "revoke", "00000000-0000-0000-0000-000000000000"]
        parser.parse_args(command)  # exits (SystemExit) on anything unknown


def test_the_files_the_guide_lists_exist_and_the_units_read_the_environment_file() -> None:
    for name in ("flowgate.env.example", "flowgate-web.service", "flowgate-worker@.service",
                 "nginx.conf"):  # fmt: skip
        assert f"`{name}`" in GUIDE.read_text()
        assert (DEPLOY / name).is_file()
    for unit in DEPLOY.glob("*.service"):
        text = unit.read_text()
        assert "EnvironmentFile=/etc/flowgate/flowgate.env" in text
        assert "KillSignal=SIGTERM" in text
    # The proxy sends to the port the env file sets.
    port = read_env_file(DEPLOY / "flowgate.env.example")["FLOWGATE_PORT"]
    assert f":{port} " in (DEPLOY / "nginx.conf").read_text()
    assert "](docs/deploy.md)" in (ROOT / "README.md").read_text()
