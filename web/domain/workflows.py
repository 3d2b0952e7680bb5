"""Stored workflows: saving and importing definitions, activating and deactivating them, the
reads the dashboard and CLI show (with execution counts), the checks that decide whether a key
may run a workflow, and the seeded BFSI template (package data, read when first needed).

The file format and its validator are web.domain.workflow_files. Imports only web.domain,
Piccolo and asyncpg (never web.domain.executions, which imports this module).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import msgspec

from web.domain import audit, clock, pool
from web.domain.actors import Actor
from web.domain.api_keys import AuthenticatedKey
from web.domain.errors import Forbidden, NotFound
from web.domain.statuses import ExecutionStatus
from web.domain.tables import Workflow
from web.domain.types import Definition, StepSettings
from web.domain.workflow_files import (
    InvalidDefinition,
    address_problems,
    check_definition,
    parse_definition,
)
from web.settings import get_settings

BFSI_WORKFLOW_ID = "workflow_bfsi_marketing_template"
# Package data (pyproject.toml [tool.setuptools.package-data]), so an installed flowgate has it.
BFSI_TEMPLATE_RESOURCE = ("web.domain", "workflow_templates/bfsi_marketing_template.yaml")

# A step of a definition ({"name", "type", "settings"}): free-form data, checked by
# web.domain.workflow_files when the workflow is saved (its settings: types.StepSettings).
Step = dict[str, Any]

_LIVE_STATUSES = (
    ExecutionStatus.PENDING,
    ExecutionStatus.RUNNING,
    ExecutionStatus.PENDING_APPROVAL,
)


def bfsi_template_text() -> str:
    package, name = BFSI_TEMPLATE_RESOURCE
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


@functools.cache
def bfsi_template() -> Definition:
    """The BFSI template, parsed and checked on first use (never at import)."""
    return parse_definition(bfsi_template_text(), "yaml")


def __getattr__(name: str) -> Any:
    # `BFSI_TEMPLATE` stays importable (tests copy it) without reading the file at import.
    if name == "BFSI_TEMPLATE":
        return bfsi_template()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- read models -----------------------------------------------------------------------------


class WorkflowSummary(msgspec.Struct, frozen=True):
    """A workflow as `flowgate workflows list` shows it."""

    id: str
    name: str
    active: bool
    steps: list[Step]
    updated_at: datetime


class WorkflowChoice(msgspec.Struct, frozen=True):
    """A workflow in a picker (the key form's allowed workflows)."""

    id: str
    name: str
    active: bool


class WorkflowWithCounts(msgspec.Struct, frozen=True):
    """A workflow with its executions in all, those not finished and its last start."""

    id: str
    name: str
    description: str
    active: bool
    required_fields: list[str]
    steps: list[Step]
    created_at: datetime
    updated_at: datetime
    executions: int
    in_progress: int
    last_started_at: datetime | None


def _json(value: Any) -> Any:
    """A JSONB column as asyncpg hands it over (text): decoded here, for every read."""
    return msgspec.json.decode(value) if isinstance(value, str | bytes) else value


@dataclass(frozen=True)
class RunnableWorkflow:
    """What starting an execution needs to know; the definition itself is copied in SQL
    (web.domain.executions.start_execution)."""

    id: str
    required_fields: tuple[str, ...]


# --- use cases -------------------------------------------------------------------------------


async def _write(definition: Definition, *, replace: bool) -> tuple[bool, bool]:
    """(written, existed before); inside the caller's transaction."""
    exists = bool(await Workflow.exists().where(Workflow.id == definition["id"]))
    if exists and not replace:
        return False, True
    fields: dict[str, Any] = {
        "name": definition["name"],
        "description": definition.get("description") or "",
        "active": definition.get("active", True),
        "required_fields": list(definition.get("required_fields") or []),
        "steps": definition["steps"],
    }
    if exists:
        await Workflow.update(**fields, updated_at=clock.now()).where(
            Workflow.id == definition["id"]
        )
    else:
        await Workflow.insert(Workflow(id=definition["id"], **fields))
    return True, exists


def _check(definition: Definition) -> None:
    """The schema, then the SSRF policy on provider URLs (FLOWGATE_PROVIDER_ALLOW_PRIVATE);
    InvalidDefinition naming every problem."""
    check_definition(definition)
    problems = address_problems(definition, allow_private=get_settings().provider_allow_private)
    if problems:
        raise InvalidDefinition(problems)


async def save_workflow(definition: Definition, *, replace: bool = True) -> bool:
    """Create or (when `replace`) update a workflow; True if anything was written. Executions
    already started keep the definition they started with (Execution.definition)."""
    _check(definition)
    async with pool.engine().transaction():
        written, _ = await _write(definition, replace=replace)
    return written


async def import_workflow(definition: Definition, *, actor: Actor) -> bool:
    """Create or update a workflow from a definition (`flowgate workflows import`), checked
    first, with its `workflow.imported` entry (the stored workflow before, the new one after);
    True when it was created, False when an existing one was replaced."""
    _check(definition)
    async with pool.engine().transaction():
        old = await Workflow.select(*_AUDITED).where(Workflow.id == definition["id"]).first()
        _, existed = await _write(definition, replace=True)
        new = await Workflow.select(*_AUDITED).where(Workflow.id == definition["id"]).first()
        await audit.record(
            actor,
            "workflow.imported",
            "workflow",
            definition["id"],
            before=None if old is None else _shown(old),
            after=None if new is None else _shown(new),
        )
    return not existed


# A workflow's columns as its audit entries show them.
_AUDITED = (
    Workflow.name,
    Workflow.description,
    Workflow.active,
    Workflow.required_fields,
    Workflow.steps,
)


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "steps": _json(row["steps"])}


async def seed_workflows() -> bool:
    """Insert the BFSI template when it is missing; an existing one (maybe edited) is kept."""
    return await save_workflow(bfsi_template(), replace=False)


async def set_active(workflow_id: str, active: bool, *, actor: Actor) -> None:
    """Activate or deactivate a workflow, with its `workflow.activated`/`.deactivated` entry;
    NotFound if unknown. Runs already started finish."""
    async with pool.engine().transaction():
        updated = await Workflow.raw(
            "UPDATE workflow AS w SET active = {} "
            "FROM (SELECT id, active FROM workflow WHERE id = {} FOR UPDATE) AS old "
            "WHERE w.id = old.id RETURNING old.active AS was_active",
            active,
            workflow_id,
        )
        if not updated:
            raise NotFound("Workflow not found")
        await audit.record(
            actor,
            "workflow.activated" if active else "workflow.deactivated",
            "workflow",
            workflow_id,
            before={"active": updated[0]["was_active"]},
            after={"active": active},
        )


async def activate_workflow(workflow_id: str, *, actor: Actor) -> None:
    await set_active(workflow_id, True, actor=actor)


async def deactivate_workflow(workflow_id: str, *, actor: Actor) -> None:
    await set_active(workflow_id, False, actor=actor)


# --- reads -----------------------------------------------------------------------------------


async def workflow_exists(workflow_id: str) -> bool:
    return bool(await Workflow.exists().where(Workflow.id == workflow_id))


async def get_definition(workflow_id: str) -> Definition:
    """A stored workflow as a definition (what `workflows export` prints). NotFound if unknown."""
    row = (
        await Workflow.select(
            Workflow.id,
            Workflow.name,
            Workflow.description,
            Workflow.active,
            Workflow.required_fields,
            Workflow.steps,
        )
        .where(Workflow.id == workflow_id)
        .output(load_json=True)
        .first()
    )
    if row is None:
        raise NotFound("Workflow not found")
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "active": row["active"],
        "required_fields": list(row["required_fields"] or []),
        "steps": row["steps"],
    }


async def list_workflows() -> list[WorkflowSummary]:
    async with pool.connection() as con:
        rows = await con.fetch(
            "SELECT id, name, active, steps, updated_at FROM workflow ORDER BY id"
        )
    return [
        WorkflowSummary(
            id=row["id"],
            name=row["name"],
            active=row["active"],
            steps=_json(row["steps"]),
            updated_at=row["updated_at"],
        )
        for row in rows
    ]


async def list_workflows_with_counts(workflow_id: str | None = None) -> list[WorkflowWithCounts]:
    """Every workflow (or only `workflow_id`) with its executions in all, those not finished
    (`in_progress`) and the last start, in one GROUP BY query; ordered by id."""
    async with pool.connection() as con:
        rows = await con.fetch(
            "SELECT w.id, w.name, w.description, w.active, w.required_fields, w.steps, "
            "  w.created_at, w.updated_at, count(e.id) AS executions, "
            "  count(e.id) FILTER (WHERE e.status = ANY($1::text[])) AS in_progress, "
            "  max(e.created_at) AS last_started_at "
            "FROM workflow AS w LEFT JOIN execution AS e ON e.workflow = w.id "
            "WHERE $2::text IS NULL OR w.id = $2 GROUP BY w.id ORDER BY w.id",
            [status.value for status in _LIVE_STATUSES],
            workflow_id,
        )
    return [
        WorkflowWithCounts(
            id=row["id"],
            name=row["name"],
            description=row["description"],
            active=row["active"],
            required_fields=list(row["required_fields"] or []),
            steps=_json(row["steps"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            executions=int(row["executions"]),
            in_progress=int(row["in_progress"]),
            last_started_at=row["last_started_at"],
        )
        for row in rows
    ]


async def get_workflow_with_counts(workflow_id: str) -> WorkflowWithCounts:
    """One workflow as `list_workflows_with_counts` gives it; NotFound if unknown."""
    rows = await list_workflows_with_counts(workflow_id)
    if not rows:
        raise NotFound("Workflow not found")
    return rows[0]


async def list_workflow_choices() -> list[WorkflowChoice]:
    """Id, name and active flag of every workflow, by id (for pickers)."""
    async with pool.connection() as con:
        rows = await con.fetch("SELECT id, name, active FROM workflow ORDER BY id")
    return [WorkflowChoice(id=row["id"], name=row["name"], active=row["active"]) for row in rows]


async def list_workflow_ids() -> list[str]:
    """Every workflow id, in order (the executions list's filter)."""
    return [choice.id for choice in await list_workflow_choices()]


async def get_runnable_workflow(workflow_id: str, key: AuthenticatedKey) -> RunnableWorkflow:
    """The workflow `key` may start now: NotFound, or Forbidden with the exact reason."""
    if "\x00" in workflow_id:  # PostgreSQL cannot even compare such a string
        raise NotFound("Workflow not found")
    row = await pool.fetch_row(
        "SELECT active, required_fields FROM workflow WHERE id = $1", workflow_id
    )
    if row is None:
        raise NotFound("Workflow not found")
    if not row["active"]:
        raise Forbidden("Workflow is inactive")
    if key.allowed_workflows and workflow_id not in key.allowed_workflows:
        raise Forbidden("Workflow is not allowed for this API key")
    return RunnableWorkflow(id=workflow_id, required_fields=tuple(row["required_fields"] or ()))


def step_settings(definition: Definition, step_type: str) -> StepSettings:
    """The settings of the definition's first step of `step_type` ({} when it has none)."""
    for step in definition.get("steps", []):
        if step.get("type") == step_type:
            settings: StepSettings = step.get("settings", {})
            return settings
    return {}


def approval_settings(definition: Definition) -> StepSettings:
    return step_settings(definition, "approval")
