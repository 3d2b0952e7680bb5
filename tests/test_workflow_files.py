"""Workflows as files: `flowgate workflows import|export|list` (a real subprocess against the
test database), the schema's errors with their exact paths, the BFSI template file, and
executions keeping the definition they started with."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.factories import PUBLIC, auth, execution_row, row_states, rows, start
from web.domain import workflow_files, workflows
from web.domain.tables import Workflow
from web.domain.workflow_files import definition_problems
from web.domain.workflows import BFSI_TEMPLATE, BFSI_WORKFLOW_ID, save_workflow

REPOSITORY = Path(__file__).resolve().parents[1]


def flowgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web.cli", *args], capture_output=True, text=True, check=False
    )


def campaign(**changes: Any) -> dict[str, Any]:
    """A valid workflow of its own id: the BFSI template through an LLM and WhatsApp."""
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition.update({"id": "workflow_my_campaign", "name": "My campaign", **changes})
    definition["steps"][0]["settings"] = {
        "provider": "openai_compatible",
        "base_url": "https://api.openai.com/v1",
        "model": "gpt-4o-mini",
        "api_key_env": "OPENAI_API_KEY",
        "system_prompt": "You write short WhatsApp offers for a bank.",
        "prompt_template": (
            "Write an offer for {{ name }} in {{ city }}.\nEnd with: Reply STOP to opt out."
        ),
        "concurrency": 4,
    }
    definition["steps"][3]["settings"] = {
        "channel": "whatsapp",
        "provider": "whatsapp_cloud",
        "phone_number_id": "106540352242922",
        "access_token_env": "WHATSAPP_ACCESS_TOKEN",
        "to_field": "phone",
    }
    return definition


def write(tmp_path: Path, definition: Any, name: str = "campaign.yaml") -> Path:
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(definition))
    else:
        path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return path


async def stored(workflow_id: str) -> dict[str, Any]:
    row = await Workflow.select().where(Workflow.id == workflow_id).output(load_json=True).first()
    assert row is not None
    result: dict[str, Any] = row
    return result


# --- the BFSI template file ------------------------------------------------------------------


async def test_the_bfsi_template_is_the_file_in_the_repository_and_what_migrate_seeds() -> None:
    # Package data (so a non-editable install has it too: tests/test_package_install.py).
    path = REPOSITORY / "web" / "domain" / "workflow_templates" / "bfsi_marketing_template.yaml"
    assert workflows.bfsi_template_text() == path.read_text()
    from_file = yaml.safe_load(path.read_text())
    assert from_file == BFSI_TEMPLATE
    assert from_file["id"] == BFSI_WORKFLOW_ID
    # The test database was made by the real `flowgate migrate` (tests/conftest.py).
    seeded = await stored(BFSI_WORKFLOW_ID)
    assert {
        "id": seeded["id"],
        "name": seeded["name"],
        "description": seeded["description"],
        "active": seeded["active"],
        "required_fields": seeded["required_fields"],
        "steps": seeded["steps"],
    } == from_file


async def test_the_bfsi_template_still_renders_its_message_word_for_word(
    client: httpx.AsyncClient, api_key: str, run_worker: Any
) -> None:
    execution_id = await start(client, api_key, csv_data=rows(1))
    await run_worker()
    (row,) = await row_states(execution_id)
    assert row["generated_content"] == (
        "Dear John, as a valued customer you are pre-approved for our Platinum credit card "
        "matched to your income bracket (75000-100000). Visit your nearest Mumbai branch or "
        "reply YES to learn more. T&C apply. Reply STOP to opt out."
    )


# --- import ----------------------------------------------------------------------------------


async def test_import_creates_a_workflow_from_yaml_that_the_api_can_run(
    client: httpx.AsyncClient, api_key: str, tmp_path: Path
) -> None:
    definition = campaign()
    result = flowgate("workflows", "import", str(write(tmp_path, definition)))

    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "created workflow workflow_my_campaign\n",
        "",
    )
    assert await workflows.get_definition("workflow_my_campaign") == definition
    response = await client.post(
        f"{PUBLIC}/agents/workflow_my_campaign/execute",
        json={"input": {"csvData": rows(1)}},
        headers=auth(api_key),
    )
    assert response.status_code == 202, response.text


async def test_import_of_an_existing_id_updates_it(tmp_path: Path) -> None:
    await save_workflow(campaign())
    changed = campaign(name="My campaign, second wave", active=False)

    result = flowgate("workflows", "import", str(write(tmp_path, changed, "wave2.json")))

    assert (result.returncode, result.stdout) == (0, "updated workflow workflow_my_campaign\n")
    row = await stored("workflow_my_campaign")
    assert (row["name"], row["active"]) == ("My campaign, second wave", False)
    assert row["updated_at"] > row["created_at"]


async def test_import_names_every_problem_with_its_exact_path_and_exits_1(tmp_path: Path) -> None:
    definition = campaign()
    del definition["steps"][0]["settings"]["model"]
    definition["steps"][0]["settings"]["concurrency"] = 0
    definition["steps"][1]["settings"]["max_length"] = "long"
    definition["steps"][3]["settings"]["access_token_env"] = "EAAG-this-is-the-token-itself"
    definition["steps"][3]["settings"]["api_key"] = "sk-live-123"
    definition["steps"].append({"type": "send_sms"})
    path = write(tmp_path, definition)

    result = flowgate("workflows", "import", str(path))

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {path}: steps[0].settings.model: required",
        f"error: {path}: steps[0].settings.concurrency: must be at least 1",
        f"error: {path}: steps[1].settings.max_length: must be an integer",
        f"error: {path}: steps[3].settings.access_token_env: must be the name of an environment "
        "variable (such as OPENAI_API_KEY), never the secret itself",
        f"error: {path}: steps[3].settings.api_key: unknown setting of the whatsapp_cloud provider",
        f"error: {path}: steps[4].type: must be one of generate_content, compliance_check, "
        "approval, send_message",
    ]
    assert not await Workflow.exists().where(Workflow.id == "workflow_my_campaign")


def _without(path: tuple[Any, ...]) -> dict[str, Any]:
    definition = campaign()
    target: Any = definition
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return definition


def _with(value: Any, *path: Any) -> dict[str, Any]:
    definition = campaign()
    target: Any = definition
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return definition


@pytest.mark.parametrize(
    ("definition", "problems"),
    [
        (campaign(), []),
        (BFSI_TEMPLATE, []),
        (["not", "a", "mapping"], ["the workflow must be an object (a YAML mapping)"]),
        (_without(("steps",)), ["steps: required"]),
        (_without(("name",)), ["name: required"]),
        (_with([], "steps"), ["steps: must not be empty"]),
        (_with("my campaign!", "id"), [
            "id: must be 1 to 200 letters, digits, '_', '-' or '.' (e.g. workflow_my_campaign)"
        ]),
        (_with("yes", "active"), ["active: must be true or false"]),
        (_with("phone", "required_fields"), ["required_fields: must be a list of strings"]),
        (_with(1, "owner"), ["owner: unknown field"]),
        (_with("oops", "steps", 1), ["steps[1]: must be an object"]),
        (_with([1], "steps", 1, "settings"), ["steps[1].settings: must be an object"]),
        (_without(("steps", 2, "type")), ["steps[2].type: required"]),
        (_with("gpt", "steps", 0, "settings", "provider"), [
            "steps[0].settings.provider: must be one of template, openai_compatible"
        ]),
        (_without(("steps", 0, "settings", "base_url")), ["steps[0].settings.base_url: required"]),
        (_with("localhost:11434", "steps", 0, "settings", "base_url"), [
            "steps[0].settings.base_url: must be an http:// or https:// URL"
        ]),
        (_with(" ", "steps", 0, "settings", "prompt_template"), [
            "steps[0].settings.prompt_template: must not be empty"
        ]),
        (_with(2.5, "steps", 0, "settings", "max_tokens"), [
            "steps[0].settings.max_tokens: must be an integer"
        ]),
        (_with(True, "steps", 0, "settings", "timeout_seconds"), [
            "steps[0].settings.timeout_seconds: must be a number"
        ]),
        (_with("{{ name }}", "steps", 0, "settings", "template"), [
            "steps[0].settings.template: unknown setting of the openai_compatible provider"
        ]),
        (_with(1, "steps", 2, "settings", "allowBulkApproval"), [
            "steps[2].settings.allowBulkApproval: must be true or false"
        ]),
        (_with("sms", "steps", 3, "settings", "channel"), [
            "steps[3].settings.channel: must be one of whatsapp"
        ]),
        (_without(("steps", 3, "settings", "phone_number_id")), [
            "steps[3].settings.phone_number_id: required"
        ]),
        # YAML reads unquoted digits as a number: fine for an id.
        (_with(106540352242922, "steps", 3, "settings", "phone_number_id"), []),
        (_with({"language": "en_US"}, "steps", 3, "settings", "template"), [
            "steps[3].settings.template.name: required"
        ]),
        (_with({"name": "offer", "language": "en", "body": []}, "steps", 3, "settings",
               "template"), ["steps[3].settings.template.body: unknown field"]),
        (_with({"provider": "http"}, "steps", 3, "settings"), ["steps[3].settings.url: required"]),
        (_with({"provider": "http", "url": "https://gw.example/send", "headers": {"X-A": 1}},
               "steps", 3, "settings"), [
            "steps[3].settings.headers: must be a map of header names to strings"
        ]),
        (_with({"type": "approval"}, "steps", 1), [
            "steps[2]: a workflow has at most one approval step"
        ]),
    ],
)  # fmt: skip
def test_the_schema_names_each_problem_with_its_exact_path(
    definition: Any, problems: list[str]
) -> None:
    assert definition_problems(definition) == problems


async def test_import_refuses_a_file_that_is_not_valid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text("id: x\nsteps: [unclosed\n")

    result = flowgate("workflows", "import", str(path))

    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {path}: not valid YAML: ")


async def test_import_refuses_files_other_than_yaml_and_json(tmp_path: Path) -> None:
    path = tmp_path / "campaign.toml"
    path.write_text("id = 'x'\n")

    result = flowgate("workflows", "import", str(path))

    assert (result.returncode, result.stderr) == (
        1,
        "error: campaign.toml: give a .yaml, .yml or .json file\n",
    )


# --- export and list -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["yaml", "json"])
async def test_export_then_import_gives_back_the_same_workflow(tmp_path: Path, fmt: str) -> None:
    await save_workflow(campaign())

    exported = flowgate("workflows", "export", "workflow_my_campaign", "--format", fmt)

    assert exported.returncode == 0, exported.stderr
    parsed = yaml.safe_load(exported.stdout) if fmt == "yaml" else json.loads(exported.stdout)
    assert parsed == campaign()
    path = tmp_path / f"exported.{fmt}"
    path.write_text(exported.stdout)
    await Workflow.delete().where(Workflow.id == "workflow_my_campaign")
    assert flowgate("workflows", "import", str(path)).returncode == 0
    assert await workflows.get_definition("workflow_my_campaign") == campaign()
    again = flowgate("workflows", "export", "workflow_my_campaign", "--format", fmt)
    assert again.stdout == exported.stdout


def test_export_writes_prompts_as_yaml_blocks_people_can_edit() -> None:
    text = workflow_files.dump_definition(campaign())
    assert (
        "    prompt_template: |-\n"
        "      Write an offer for {{ name }} in {{ city }}.\n"
        "      End with: Reply STOP to opt out.\n"
    ) in text


async def test_export_of_an_unknown_workflow_exits_1() -> None:
    result = flowgate("workflows", "export", "workflow_nope")
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        "error: Workflow not found\n",
    )


async def test_workflows_list_shows_each_workflow_with_its_steps() -> None:
    await save_workflow(campaign(active=False))

    listed = flowgate("workflows", "list")
    as_json = flowgate("workflows", "list", "--json")

    steps = "generate_content -> compliance_check -> approval -> send_message"
    assert listed.stdout.splitlines() == [
        f"workflow_bfsi_marketing_template  active    BFSI Marketing Campaign  ({steps})",
        f"workflow_my_campaign  inactive  My campaign  ({steps})",
    ]
    assert [(w["id"], w["active"], w["steps"]) for w in json.loads(as_json.stdout)] == [
        (BFSI_WORKFLOW_ID, True, steps.split(" -> ")),
        ("workflow_my_campaign", False, steps.split(" -> ")),
    ]


# --- executions keep their definition --------------------------------------------------------


async def test_an_execution_keeps_its_original_definition_after_the_workflow_changes(
    client: httpx.AsyncClient, api_key: str, run_worker: Any, tmp_path: Path
) -> None:
    original = copy.deepcopy(BFSI_TEMPLATE)
    original.update(id="workflow_my_campaign", name="My campaign")
    original["steps"][0]["settings"]["template"] = "Hello {{ name }}. Reply STOP to opt out."
    await save_workflow(original)
    first = await start(client, api_key, csv_data=rows(1), workflow_id="workflow_my_campaign")
    snapshot = (await execution_row(first))["definition"]

    changed = copy.deepcopy(original)
    changed["steps"][0]["settings"]["template"] = "Goodbye {{ name }}. Reply STOP to opt out."
    changed["steps"][2]["settings"]["title"] = "A new title"
    result = flowgate("workflows", "import", str(write(tmp_path, changed)))
    assert result.returncode == 0, result.stderr
    second = await start(client, api_key, csv_data=rows(1), workflow_id="workflow_my_campaign")

    await run_worker()

    assert (await execution_row(first))["definition"] == snapshot
    assert snapshot["steps"] == original["steps"]
    assert [r["generated_content"] for r in await row_states(first)] == [
        "Hello John Doe. Reply STOP to opt out."
    ]
    assert [r["generated_content"] for r in await row_states(second)] == [
        "Goodbye John Doe. Reply STOP to opt out."
    ]
    pending = await client.get(
        f"{PUBLIC}/executions/{first}/pending-approval", headers=auth(api_key)
    )
    assert pending.json()["approvalData"]["metadata"]["title"] == (
        "Review Generated WhatsApp Messages"
    )


def test_the_bfsi_template_is_read_when_first_needed_not_at_import() -> None:
    code = (
        "import web.domain.workflows as w; print(w.bfsi_template.cache_info().currsize); "
        "w.bfsi_template(); print(w.bfsi_template.cache_info().currsize)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "1"]
