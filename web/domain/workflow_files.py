"""Workflow files: the schema of a definition (step types, each step's and provider's settings),
the validator whose every problem names its exact path (`steps[2].settings.model: required`),
and reading and writing definitions as YAML or JSON text.

Secrets never appear in a definition: provider settings name the environment variable that holds
them (`api_key_env`, `access_token_env`, `token_env`), and the worker reads it when it runs.
Pure functions: imports only web.domain.errors, web.domain.addresses and PyYAML (no database).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from web.domain import addresses, durations, send_window
from web.domain.errors import InvalidInput
from web.domain.types import Definition

STEP_TYPES = ("generate_content", "compliance_check", "approval", "send_message")

FILE_FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}


class InvalidDefinition(InvalidInput):
    """A workflow definition with problems, each naming its exact path
    (`steps[2].settings.model: required`). The message is all of them, joined by "; "."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# --- the schema ------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORKFLOW_ID = re.compile(r"[A-Za-z0-9_.\-]{1,200}")


@dataclass(frozen=True)
class Setting:
    """One setting: its kind, whether it is required, and the bounds of its value.

    Kinds: "string", "text" (a non-empty string, e.g. a template), "id" (a string or an integer,
    as YAML reads unquoted digits), "url" (http or https), "env" (the NAME of an environment
    variable), "integer", "number", "boolean", "strings" (a list of strings), "headers" (a map of
    strings), "object" (checked against `fields`) and "window" (web.domain.send_window).
    """

    kind: str
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    fields: Mapping[str, Setting] = field(default_factory=dict)


# How an HTTP provider calls out: per-request timeout, retries on 429/5xx, concurrency.
_HTTP_CALLS = {
    "concurrency": Setting("integer", minimum=1, maximum=64),
    "timeout_seconds": Setting("number", minimum=0.001, maximum=600),
    "max_retries": Setting("integer", minimum=0, maximum=10),
    "retry_backoff_seconds": Setting("number", minimum=0, maximum=600),
    "max_retry_wait_seconds": Setting("number", minimum=0, maximum=3600),
}

CONTENT_PROVIDERS: dict[str, dict[str, Setting]] = {
    "template": {"template": Setting("text", required=True)},
    "openai_compatible": {
        "base_url": Setting("url", required=True),
        "model": Setting("text", required=True),
        "api_key_env": Setting("env", required=True),
        "prompt_template": Setting("text", required=True),
        "system_prompt": Setting("string"),
        "temperature": Setting("number", minimum=0, maximum=2),
        "max_tokens": Setting("integer", minimum=1),
        # The account's limits, shared by every worker (worker/providers/throttle.py).
        "requestsPerMinute": Setting("integer", minimum=1, maximum=1_000_000),
        "tokensPerMinute": Setting("integer", minimum=1, maximum=1_000_000_000),
        **_HTTP_CALLS,
    },
}

MESSAGING_PROVIDERS: dict[str, dict[str, Setting]] = {
    "sandbox": {},
    "whatsapp_cloud": {
        "phone_number_id": Setting("id", required=True),
        "access_token_env": Setting("env", required=True),
        "base_url": Setting("url"),
        "template": Setting(
            "object",
            fields={
                "name": Setting("text", required=True),
                "language": Setting("text", required=True),
                "body_parameters": Setting("strings"),
            },
        ),
        # The phone number's throughput, shared by every worker (default 80).
        "messagesPerSecond": Setting("number", minimum=0.1, maximum=10_000),
        **_HTTP_CALLS,
    },
    "http": {
        "url": Setting("url", required=True),
        "token_env": Setting("env"),
        "headers": Setting("headers"),
        **_HTTP_CALLS,
    },
}

# Settings of each step type whatever its provider; `provider` picks the rest from above.
STEP_SETTINGS: dict[str, dict[str, Setting]] = {
    "generate_content": {"provider": Setting("string", choices=tuple(CONTENT_PROVIDERS))},
    "compliance_check": {
        "banned_phrases": Setting("strings"),
        "required_text": Setting("strings"),
        "max_length": Setting("integer", minimum=1),
        "phone_field": Setting("string"),
        "required_fields": Setting("strings"),
    },
    "approval": {
        "title": Setting("string"),
        "description": Setting("string"),
        "allowBulkApproval": Setting("boolean"),
        "requireComment": Setting("boolean"),
        "displayFields": Setting("strings"),
        # Maker-checker (web.domain.approvals): distinct approvers needed, whether an editor
        # may complete the approval, the groups whose members (and admins) decide.
        "requiredApprovals": Setting("integer", minimum=1, maximum=20),
        "allowSelfApproval": Setting("boolean"),
        "approverGroups": Setting("strings"),
        # Deadlines (web.domain.durations): "48h", "30m", "20s", "1h30m".
        "timeout": Setting("duration"),
        "remindBefore": Setting("duration"),
        "notifications": Setting(
            "object",
            fields={
                "email": Setting("boolean"),
                "slackWebhookUrl": Setting("url"),
            },
        ),
        # The review screen's: input fields shown beside displayFields (not in the API's rows),
        # and whether rejecting one row asks the reviewer for a reason.
        "contextFields": Setting("strings"),
        "requireRejectReason": Setting("boolean"),
    },
    "send_message": {
        "provider": Setting("string", choices=tuple(MESSAGING_PROVIDERS)),
        "channel": Setting("string", choices=("whatsapp",)),
        "to_field": Setting("string"),
        "batch_size": Setting("integer", minimum=1, maximum=1000),
        # Sending hours (web.domain.send_window): rows wait outside them.
        "sendWindow": Setting("window"),
    },
}
DEFAULT_PROVIDERS = {"generate_content": "template", "send_message": "sandbox"}
PROVIDERS = {"generate_content": CONTENT_PROVIDERS, "send_message": MESSAGING_PROVIDERS}

_TOP_LEVEL = {
    "id": Setting("string", required=True),
    "name": Setting("text", required=True),
    "description": Setting("string"),
    "active": Setting("boolean"),
    "required_fields": Setting("strings"),
    "steps": Setting("list", required=True),
}
_STEP_KEYS = ("name", "type", "settings")


def _kind_problem(setting: Setting, value: Any) -> str | None:
    """Why `value` is not of the setting's kind (and bounds), or None."""
    kind = setting.kind
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind in ("string", "text", "url", "env") and not isinstance(value, str):
        return "must be a string"
    if kind == "text" and not value.strip():
        return "must not be empty"
    if kind == "id" and (
        isinstance(value, bool) or not isinstance(value, str | int) or value == ""
    ):
        return "must be a string"
    if kind == "url" and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        return "must be an http:// or https:// URL"
    if kind == "env" and not _ENV_NAME.fullmatch(value):
        return (
            "must be the name of an environment variable (such as OPENAI_API_KEY), "
            "never the secret itself"
        )
    if kind == "integer" and (not number or not float(value).is_integer()):
        return "must be an integer"
    if kind == "number" and not number:
        return "must be a number"
    if kind == "boolean" and not isinstance(value, bool):
        return "must be true or false"
    if kind == "strings" and (
        not isinstance(value, list) or not all(isinstance(item, str) for item in value)
    ):
        return "must be a list of strings"
    if kind == "headers" and (
        not isinstance(value, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    ):
        return "must be a map of header names to strings"
    if kind == "duration":
        if not isinstance(value, str):
            return 'must be a duration such as "48h", "30m", "20s" or "1h30m"'
        try:
            durations.parse(value)
        except ValueError as exc:
            return str(exc)
    if kind == "object" and not isinstance(value, dict):
        return "must be an object"
    if kind == "list" and not isinstance(value, list):
        return "must be a list"
    if setting.choices and value not in setting.choices:
        return f"must be one of {', '.join(setting.choices)}"
    if number and kind in ("integer", "number"):
        if setting.minimum is not None and value < setting.minimum:
            return f"must be at least {setting.minimum:g}"
        if setting.maximum is not None and value > setting.maximum:
            return f"must be at most {setting.maximum:g}"
    return None


def _check_fields(
    values: Mapping[str, Any], schema: Mapping[str, Setting], path: str, what: str | None
) -> list[str]:
    """Problems of an object against its schema: required fields, kinds, and unknown fields
    (called `unknown {what}`; not reported when `what` is None)."""
    prefix = f"{path}." if path else ""
    problems = [
        f"{prefix}{name}: required"
        for name, setting in schema.items()
        if setting.required and values.get(name) is None
    ]
    for name, value in values.items():
        setting = schema.get(name)
        if setting is None:
            if what is not None:
                problems.append(f"{prefix}{name}: unknown {what}")
            continue
        if value is None:
            continue
        if setting.kind == "window":
            problems.extend(send_window.problems(value, f"{prefix}{name}"))
            continue
        problem = _kind_problem(setting, value)
        if problem:
            problems.append(f"{prefix}{name}: {problem}")
        elif setting.kind == "object":
            problems.extend(_check_fields(value, setting.fields, f"{prefix}{name}", "field"))
    return problems


def _step_problems(index: int, step: Any) -> list[str]:
    path = f"steps[{index}]"
    if not isinstance(step, dict):
        return [f"{path}: must be an object"]
    problems = [f"{path}.{key}: unknown field" for key in step if key not in _STEP_KEYS]
    if "name" in step and not isinstance(step["name"], str):
        problems.append(f"{path}.name: must be a string")
    kind = step.get("type")
    if kind is None:
        return [*problems, f"{path}.type: required"]
    if kind not in STEP_TYPES:
        return [*problems, f"{path}.type: must be one of {', '.join(STEP_TYPES)}"]
    settings = step.get("settings", {})
    if not isinstance(settings, dict):
        return [*problems, f"{path}.settings: must be an object"]
    schema = dict(STEP_SETTINGS[kind])
    what: str | None = f"setting of {kind}"
    if kind in PROVIDERS:
        provider = settings.get("provider", DEFAULT_PROVIDERS[kind])
        if provider in PROVIDERS[kind]:
            schema.update(PROVIDERS[kind][provider])
            what = f"setting of the {provider} provider"
        else:
            what = None  # the provider's own problem says it all
    problems += _check_fields(settings, schema, f"{path}.settings", what)
    if kind == "approval" and not problems:
        problems += _approval_problems(settings, f"{path}.settings")
    return problems


_GROUP = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _approval_problems(settings: Mapping[str, Any], path: str) -> list[str]:
    """What the approval step's settings cannot mean together (each already of its kind)."""
    problems = []
    for index, group in enumerate(settings.get("approverGroups") or []):
        if not _GROUP.fullmatch(group):
            problems.append(
                f"{path}.approverGroups[{index}]: must be 1 to 64 letters, digits, '_', '-' or '.'"
            )
    remind, timeout = settings.get("remindBefore"), settings.get("timeout")
    if remind is not None and timeout is None:
        problems.append(f"{path}.remindBefore: needs a timeout to remind before")
    elif remind is not None and durations.parse(remind) >= durations.parse(str(timeout)):
        problems.append(f"{path}.remindBefore: must be shorter than timeout ({timeout})")
    return problems


def definition_problems(definition: Any) -> list[str]:
    """Every problem of a workflow definition, each naming its exact path; [] when valid."""
    if not isinstance(definition, dict):
        return ["the workflow must be an object (a YAML mapping)"]
    problems = _check_fields(definition, _TOP_LEVEL, "", "field")
    workflow_id = definition.get("id")
    if isinstance(workflow_id, str) and not _WORKFLOW_ID.fullmatch(workflow_id):
        problems.append(
            "id: must be 1 to 200 letters, digits, '_', '-' or '.' (e.g. workflow_my_campaign)"
        )
    steps = definition.get("steps")
    if isinstance(steps, list):
        if not steps:
            problems.append("steps: must not be empty")
        for index, step in enumerate(steps):
            problems.extend(_step_problems(index, step))
        approvals = [
            i for i, s in enumerate(steps) if isinstance(s, dict) and s.get("type") == "approval"
        ]
        if len(approvals) > 1:
            problems.append(f"steps[{approvals[1]}]: a workflow has at most one approval step")
    return problems


# Provider settings that name a URL the worker calls (`base_url`, `url`).
_URL_SETTINGS = sorted(
    {
        name
        for schemas in (CONTENT_PROVIDERS, MESSAGING_PROVIDERS)
        for schema in schemas.values()
        for name, setting in schema.items()
        if setting.kind == "url"
    }
)


def address_problems(definition: Definition, *, allow_private: bool) -> list[str]:
    """Provider URLs of a (checked) definition that point to a private or loopback address
    (web.domain.addresses: IP literals in any spelling, IPv6 forms of IPv4, `localhost`), each
    naming its path; [] when `allow_private`. Names are checked again at every connection."""
    if allow_private:
        return []
    problems = []
    for index, step in enumerate(definition.get("steps") or []):
        settings = step.get("settings") or {}
        for name in _URL_SETTINGS:
            value = settings.get(name)
            if not isinstance(value, str):
                continue
            try:
                host = urlsplit(value).hostname
            except ValueError:
                host = None
            if host and addresses.host_problem(host):
                problems.append(f"steps[{index}].settings.{name}: {addresses.REFUSED}")
        slack = (settings.get("notifications") or {}).get("slackWebhookUrl")
        try:
            host = urlsplit(slack).hostname if isinstance(slack, str) else None
        except ValueError:
            host = None
        if host and addresses.host_problem(host):
            path = f"steps[{index}].settings.notifications.slackWebhookUrl"
            problems.append(f"{path}: {addresses.REFUSED}")
    return problems


def check_definition(definition: Any) -> None:
    """Raise InvalidDefinition listing every problem of a workflow definition."""
    problems = definition_problems(definition)
    if problems:
        raise InvalidDefinition(problems)


# --- files -----------------------------------------------------------------------------------


def parse_definition(text: str, fmt: str) -> Definition:
    """A definition from YAML or JSON text, checked. InvalidInput on syntax or schema problems."""
    try:
        definition = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidDefinition([f"not valid {fmt.upper()}: {exc}"]) from None
    check_definition(definition)
    result: Definition = definition
    return result


def read_definition_file(path: Path) -> Definition:
    """A definition from a .yaml, .yml or .json file, checked."""
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(f"{path.name}: give a .yaml, .yml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_definition(text, fmt)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (prompts, templates) as literal blocks, the way people write them."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_definition(definition: Definition, fmt: str = "yaml") -> str:
    """The definition as a file's text; parse_definition(dump_definition(d, f), f) == d."""
    if fmt == "json":
        return json.dumps(definition, indent=2, ensure_ascii=False) + "\n"
    text: str = yaml.dump(
        definition, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
    return text
