"""Settings: every variable parsed by a typed helper that names it when its value is bad, every
variable in the README's table, the checkout's .dev/env filling what the environment leaves
unset, and the in-repository copy of the API contract."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import mail_server
from web import settings as settings_module
from web.settings import SettingsError, apply_dev_env, find_dev_env, get_settings, read_env_file

ROOT = Path(__file__).resolve().parent.parent
VARIABLE = re.compile(r"\b(FLOWGATE_[A-Z0-9_]+|DATABASE_URL|REDIS_URL|FORWARDED_ALLOW_IPS)\b")


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    get_settings.cache_clear()
    yield monkeypatch  # type: ignore[misc]
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("FLOWGATE_PORT", "abc", "an integer from 1 to 65535"),
        ("FLOWGATE_PORT", "70000", "an integer from 1 to 65535"),
        ("FLOWGATE_MAX_ROWS", "1.5", "an integer from 1 up"),
        ("FLOWGATE_SESSION_MAX_AGE_SECONDS", "12h", "an integer from 1 up"),
        ("FLOWGATE_KEY_CACHE_SECONDS", "five", "a number of at least 0"),
        ("FLOWGATE_REDIS_TIMEOUT_SECONDS", "-1", "a number of at least 0"),
        ("FLOWGATE_STALLED_AFTER_SECONDS", "nan", "a number of at least 0"),
        ("FLOWGATE_COOKIE_SECURE", "maybe", "true or false (also 1/0, yes/no, on/off)"),
        ("FLOWGATE_WEBHOOK_RETRY_DELAYS", "1,x,15", "comma-separated numbers of at least 0"),
        ("FLOWGATE_LOG_LEVEL", "loud", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("FLOWGATE_WEBHOOK_CONCURRENCY", "0", "an integer from 1 to 1000"),
        ("FLOWGATE_WEBHOOK_TIMEOUT_SECONDS", "0", "a number of at least 0.001"),
        ("FLOWGATE_PROVIDER_ALLOW_PRIVATE", "sometimes", "true or false"),
        ("FLOWGATE_SMTP_URL", "mail.example.com:25", "an smtp://, smtp+starttls:// or smtps://"),
        ("FLOWGATE_SMTP_URL", "http://mail.example.com", "an smtp://, smtp+starttls://"),
        ("FLOWGATE_SMTP_URL", "smtp://u:hunter2@mail.example.com", "an smtp://, smtp+starttls"),
        ("FLOWGATE_SMTP_URL", "smtp://mail.example.com:x", "an smtp://, smtp+starttls://"),
        ("FLOWGATE_SMTP_CA_FILE", "/nonexistent/ca.pem", "a readable PEM file of CA certificates"),
        ("FLOWGATE_SMTP_FROM", "approvals", "an email address"),
        ("FLOWGATE_PUBLIC_URL", "flowgate.example.com", "an http:// or https:// URL"),
        ("FLOWGATE_NOTIFICATION_RETRY_DELAYS", "5,soon", "comma-separated numbers"),
        ("FLOWGATE_NOTIFICATION_TIMEOUT_SECONDS", "0", "a number of at least 0.001"),
        ("FLOWGATE_WORKER_METRICS_PORT", "0", "an integer from 1 to 65535"),
        ("FLOWGATE_WORKER_METRICS_PORT", "http", "an integer from 1 to 65535"),
        ("FLOWGATE_WORKER_METRICS_HOST", "localhost", "an IP address such as 127.0.0.1"),
        ("FLOWGATE_AUDIT_RETENTION_DAYS", "0", "an integer from 1 to 36500"),
        ("FLOWGATE_AUDIT_RETENTION_DAYS", "7y", "an integer from 1 to 36500"),
        ("FLOWGATE_RETENTION_DAYS", "90d", "an integer from 1 to 36500"),
        ("FLOWGATE_RETENTION_DAYS", "0", "an integer from 1 to 36500"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_value(
    fresh_settings: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    fresh_settings.setenv(name, value)

    with pytest.raises(SettingsError) as raised:
        get_settings()

    assert str(raised.value).startswith(f"{name}: expected {expected}")
    assert str(raised.value).endswith(f", got {value!r}")


def test_good_values_are_parsed_and_empty_ones_count_as_unset(
    fresh_settings: pytest.MonkeyPatch,
) -> None:
    fresh_settings.setenv("FLOWGATE_PORT", " 3005 ")
    fresh_settings.setenv("FLOWGATE_COOKIE_SECURE", "Yes")
    fresh_settings.setenv("FLOWGATE_WEBHOOK_RETRY_DELAYS", "0.5, 2 ,10")
    fresh_settings.setenv("FLOWGATE_LOG_LEVEL", "debug")
    fresh_settings.setenv("FLOWGATE_MAX_ROWS", "")

    settings = get_settings()

    assert settings.port == 3005
    assert settings.cookie_secure is True
    assert settings.webhook_retry_delays == (0.5, 2.0, 10.0)
    assert settings.log_level == "DEBUG"
    assert settings.max_rows == 100


def test_provider_urls_follow_the_webhook_allowance_unless_set_apart(
    fresh_settings: pytest.MonkeyPatch,
) -> None:
    fresh_settings.setenv("FLOWGATE_WEBHOOK_ALLOW_PRIVATE", "true")
    fresh_settings.delenv("FLOWGATE_PROVIDER_ALLOW_PRIVATE", raising=False)
    assert get_settings().provider_allow_private is True
    get_settings.cache_clear()
    fresh_settings.setenv("FLOWGATE_PROVIDER_ALLOW_PRIVATE", "false")
    assert get_settings().provider_allow_private is False
    get_settings.cache_clear()
    fresh_settings.setenv("FLOWGATE_WEBHOOK_ALLOW_PRIVATE", "false")
    fresh_settings.delenv("FLOWGATE_PROVIDER_ALLOW_PRIVATE")
    assert get_settings().provider_allow_private is False


def test_the_command_prints_one_line_and_exits_1_on_a_bad_value() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "web.cli", "keys", "list"],
        env={**os.environ, "FLOWGATE_KEY_CACHE_SECONDS": "soon"},
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr == (
        "FLOWGATE_KEY_CACHE_SECONDS: expected a number of at least 0, got 'soon'\n"
    )


def _readme_table_variables() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    names = {line.split("`")[1] for line in rows}
    for line in rows:  # every row has a default and a meaning
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 3 and all(cells), line
    return names


def test_the_readme_table_lists_every_variable_the_code_reads() -> None:
    read = set(VARIABLE.findall(Path(settings_module.__file__).read_text()))
    for folder in ("web", "worker", "scripts"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".sh"} and "piccolo_migrations" not in path.parts:
                read |= set(VARIABLE.findall(path.read_text()))
    read |= set(VARIABLE.findall((ROOT / "piccolo_conf.py").read_text()))

    assert "FLOWGATE_SESSION_MAX_AGE_SECONDS" in read
    assert read - _readme_table_variables() == set()


def test_the_contract_in_the_repository_is_the_shared_one_byte_for_byte() -> None:
    shared = ROOT.parent / "shared" / "spec" / "public-api.md"
    if not shared.is_file():
        pytest.skip("no ../shared/spec/public-api.md beside this checkout")
    assert (ROOT / "docs" / "public-api.md").read_bytes() == shared.read_bytes()
    assert "](docs/public-api.md)" in (ROOT / "README.md").read_text()
    assert "../shared/" not in (ROOT / "README.md").read_text()


def _checkout(tmp_path: Path, env_text: str) -> Path:
    (tmp_path / "piccolo_conf.py").write_text("")
    (tmp_path / ".dev").mkdir()
    (tmp_path / ".dev" / "env").write_text(env_text)
    return tmp_path


def test_dev_env_fills_only_what_the_environment_leaves_unset(
    tmp_path: Path, fresh_settings: pytest.MonkeyPatch
) -> None:
    checkout = _checkout(
        tmp_path,
        "# a comment\nREDIS_URL='redis://127.0.0.1:1/0'\nFLOWGATE_PORT=\"4000\"\n"
        "FLOWGATE_COOKIE_SECURE=true\n",
    )
    (checkout / "sub" / "dir").mkdir(parents=True)
    fresh_settings.chdir(checkout / "sub" / "dir")
    environ = {"REDIS_URL": "redis://elsewhere:6379/0", "FLOWGATE_COOKIE_SECURE": ""}

    assert apply_dev_env(environ) == checkout.resolve() / ".dev" / "env"

    assert environ == {
        "REDIS_URL": "redis://elsewhere:6379/0",  # the environment wins
        "FLOWGATE_PORT": "4000",
        "FLOWGATE_COOKIE_SECURE": "true",  # set but empty counts as unset
    }


def test_dev_env_needs_a_checkout_and_can_be_switched_off(
    tmp_path: Path, fresh_settings: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".dev").mkdir()
    (tmp_path / ".dev" / "env").write_text("FLOWGATE_PORT=4000\n")  # no piccolo_conf.py beside
    assert find_dev_env(tmp_path) != tmp_path / ".dev" / "env"

    environ = {"FLOWGATE_DEV_ENV": ""}
    assert apply_dev_env(environ) is None
    assert environ == {"FLOWGATE_DEV_ENV": ""}

    with pytest.raises(SettingsError, match="FLOWGATE_DEV_ENV: expected an existing file"):
        apply_dev_env({"FLOWGATE_DEV_ENV": str(tmp_path / "missing")})


def test_read_env_file_takes_shell_style_lines(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text("A='1'\nexport B=two\n\nC=\"x=y\"\nnot a line\n")
    assert read_env_file(path) == {"A": "1", "B": "two", "C": "x=y"}


def test_notification_settings_are_read(fresh_settings: pytest.MonkeyPatch) -> None:
    fresh_settings.setenv("FLOWGATE_SMTP_URL", "smtp+starttls://mailer@mail.example.com:587")
    fresh_settings.setenv("FLOWGATE_SMTP_PASSWORD", "s3cret")
    fresh_settings.setenv("FLOWGATE_SMTP_FROM", "approvals@bank.example")
    fresh_settings.setenv("FLOWGATE_PUBLIC_URL", "https://flowgate.bank.example/")
    fresh_settings.setenv("FLOWGATE_NOTIFICATION_RETRY_DELAYS", "1,2")

    settings = get_settings()

    assert settings.smtp_url == "smtp+starttls://mailer@mail.example.com:587"
    assert settings.smtp_password == "s3cret"
    assert settings.smtp_from == "approvals@bank.example"
    assert settings.public_url == "https://flowgate.bank.example"
    assert settings.notification_retry_delays == (1.0, 2.0)


def test_the_smtp_ca_file_must_hold_certificates_and_needs_a_tls_url(
    fresh_settings: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = mail_server.make_certificates(tmp_path / "relay").ca
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate\n")
    fresh_settings.setenv("FLOWGATE_SMTP_URL", "smtps://mailer@mail.bank.internal")
    for bad in (not_pem, tmp_path):  # a file without a certificate; a directory
        fresh_settings.setenv("FLOWGATE_SMTP_CA_FILE", str(bad))
        with pytest.raises(SettingsError) as raised:
            get_settings()
        assert str(raised.value) == (
            f"FLOWGATE_SMTP_CA_FILE: expected a readable PEM file of CA certificates, "
            f"got {str(bad)!r}"
        )
        get_settings.cache_clear()

    fresh_settings.setenv("FLOWGATE_SMTP_CA_FILE", str(ca))
    assert get_settings().smtp_ca_file == str(ca)
    get_settings.cache_clear()

    fresh_settings.setenv("FLOWGATE_SMTP_URL", "smtp://mail.bank.internal:25")
    with pytest.raises(SettingsError) as raised:
        get_settings()
    assert str(raised.value).startswith(
        "FLOWGATE_SMTP_CA_FILE: expected no CA file with a plain smtp:// FLOWGATE_SMTP_URL"
    )
