"""Workflow definitions as data: the step types, their settings, the seeded BFSI template, and
the checks that decide whether a key may run a workflow. Imports only web.domain and Piccolo."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from web.domain.api_keys import AuthenticatedKey
from web.domain.errors import Forbidden, InvalidInput, NotFound
from web.domain.tables import Workflow

STEP_TYPES = ("generate_content", "compliance_check", "approval", "send_message")

BFSI_WORKFLOW_ID = "workflow_bfsi_marketing_template"

_BFSI_MESSAGE = (
    "Dear {{ (name or 'Customer').split(' ')[0] }}, "
    "{% set score = credit_score | default(0) | int(0) %}"
    "{% if score >= 750 %}as a valued customer you are pre-approved for our Platinum credit card"
    "{% elif score >= 650 %}you qualify for a personal loan at a special rate"
    "{% else %}start building your credit with our secured card{% endif %}"
    "{% if income_bracket %} matched to your income bracket ({{ income_bracket }}){% endif %}"
    "{% if city %}. Visit your nearest {{ city }} branch or reply YES to learn more"
    "{% else %}. Reply YES to learn more{% endif %}. "
    "T&C apply. Reply STOP to opt out."
)

BFSI_TEMPLATE: dict[str, Any] = {
    "id": BFSI_WORKFLOW_ID,
    "name": "BFSI Marketing Campaign",
    "description": (
        "Generate a personalised WhatsApp offer per customer, check it for compliance, "
        "wait for a reviewer's approval, then send the approved messages."
    ),
    "active": True,
    "required_fields": ["customerId", "name", "phone"],
    "steps": [
        {
            "name": "Generate personalised message",
            "type": "generate_content",
            "settings": {"provider": "template", "template": _BFSI_MESSAGE},
        },
        {
            "name": "Compliance check",
            "type": "compliance_check",
            "settings": {
                "banned_phrases": [
                    "guaranteed returns",
                    "risk-free",
                    "risk free",
                    "100% guaranteed",
                    "no risk",
                    "double your money",
                ],
                "required_text": ["Reply STOP to opt out"],
                "max_length": 1000,
                "phone_field": "phone",
                "required_fields": ["customerId", "name", "phone"],
            },
        },
        {
            "name": "Manual approval",
            "type": "approval",
            "settings": {
                "title": "Review Generated WhatsApp Messages",
                "description": "Please review the AI-generated content",
                "allowBulkApproval": True,
                "requireComment": False,
                "displayFields": [
                    "customerId",
                    "name",
                    "phone",
                    "generated_content",
                    "compliance_status",
                ],
            },
        },
        {
            "name": "Send WhatsApp message",
            "type": "send_message",
            "settings": {"channel": "whatsapp", "provider": "sandbox", "to_field": "phone"},
        },
    ],
}


@dataclass(frozen=True)
class RunnableWorkflow:
    id: str
    required_fields: tuple[str, ...]
    definition: dict[str, Any]


def check_definition(definition: dict[str, Any]) -> None:
    """Raise InvalidInput naming the first problem of a workflow definition."""
    steps = definition.get("steps")
    if not isinstance(steps, list) or not steps:
        raise InvalidInput("steps: must be a non-empty list")
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            raise InvalidInput(f"steps[{index}]: must be an object")
        if step.get("type") not in STEP_TYPES:
            raise InvalidInput(f"steps[{index}].type: must be one of {', '.join(STEP_TYPES)}")
        if not isinstance(step.get("settings", {}), dict):
            raise InvalidInput(f"steps[{index}].settings: must be an object")


async def save_workflow(definition: dict[str, Any], *, replace: bool = True) -> bool:
    """Create or (when `replace`) update a workflow; True if anything was written."""
    check_definition(definition)
    exists = await Workflow.exists().where(Workflow.id == definition["id"])
    if exists and not replace:
        return False
    fields: dict[str, Any] = {
        "name": definition["name"],
        "description": definition.get("description", ""),
        "active": definition.get("active", True),
        "required_fields": list(definition.get("required_fields", [])),
        "steps": definition["steps"],
    }
    if exists:
        await Workflow.update(**fields).where(Workflow.id == definition["id"])
    else:
        await Workflow.insert(Workflow(id=definition["id"], **fields))
    return True


async def seed_workflows() -> bool:
    """Insert the BFSI template when it is missing; an existing one (maybe edited) is kept."""
    return await save_workflow(BFSI_TEMPLATE, replace=False)


async def set_active(workflow_id: str, active: bool) -> None:
    updated = (
        await Workflow.update({Workflow.active: active})
        .where(Workflow.id == workflow_id)
        .returning(Workflow.id)
    )
    if not updated:
        raise NotFound("Workflow not found")


async def get_runnable_workflow(workflow_id: str, key: AuthenticatedKey) -> RunnableWorkflow:
    """The workflow `key` may start now: NotFound, or Forbidden with the exact reason."""
    if "\x00" in workflow_id:  # PostgreSQL cannot even compare such a string
        raise NotFound("Workflow not found")
    row = (
        await Workflow.select(
            Workflow.id,
            Workflow.name,
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
    if not row["active"]:
        raise Forbidden("Workflow is inactive")
    if key.allowed_workflows and workflow_id not in key.allowed_workflows:
        raise Forbidden("Workflow is not allowed for this API key")
    return RunnableWorkflow(
        id=row["id"],
        required_fields=tuple(row["required_fields"] or ()),
        definition={"id": row["id"], "name": row["name"], "steps": row["steps"]},
    )


def approval_settings(definition: dict[str, Any]) -> dict[str, Any]:
    """The settings of the definition's first approval step ({} when it has none)."""
    for step in definition.get("steps", []):
        if step.get("type") == "approval":
            settings: dict[str, Any] = step.get("settings", {})
            return settings
    return {}
