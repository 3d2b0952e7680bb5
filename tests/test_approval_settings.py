"""The approval step's maker-checker, deadline and notification settings in a workflow file:
each bad value named by its path (web.domain.workflow_files), nothing written on import."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from web.domain import durations
from web.domain.approvals import approval_rules
from web.domain.workflow_files import address_problems, definition_problems
from web.domain.workflows import BFSI_TEMPLATE

AT = "steps[2].settings"


def _with(**approval: Any) -> dict[str, Any]:
    definition = copy.deepcopy(BFSI_TEMPLATE)
    definition["steps"][2]["settings"].update(approval)
    return definition


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"requiredApprovals": 0}, f"{AT}.requiredApprovals: must be at least 1"),
        ({"requiredApprovals": 1.5}, f"{AT}.requiredApprovals: must be an integer"),
        ({"requiredApprovals": "2"}, f"{AT}.requiredApprovals: must be an integer"),
        ({"allowSelfApproval": "no"}, f"{AT}.allowSelfApproval: must be true or false"),
        ({"approverGroups": "risk"}, f"{AT}.approverGroups: must be a list of strings"),
        ({"approverGroups": ["risk", "a b"]}, f"{AT}.approverGroups[1]: must be 1 to 64"),
        ({"timeout": 48}, f'{AT}.timeout: must be a duration such as "48h"'),
        ({"timeout": "2 days"}, f'{AT}.timeout: must be a duration such as "48h"'),
        ({"timeout": "0s"}, f"{AT}.timeout: must be longer than 0 seconds"),
        ({"timeout": "400d"}, f"{AT}.timeout: must be at most 365 days"),
        ({"remindBefore": "1h"}, f"{AT}.remindBefore: needs a timeout to remind before"),
        (
            {"timeout": "1h", "remindBefore": "60m"},
            f"{AT}.remindBefore: must be shorter than timeout (1h)",
        ),
        ({"notifications": {"slack": "x"}}, f"{AT}.notifications.slack: unknown field"),
        (
            {"notifications": {"slackWebhookUrl": "ftp://x"}},
            f"{AT}.notifications.slackWebhookUrl: must be an http:// or https:// URL",
        ),
        ({"notifications": {"email": "yes"}}, f"{AT}.notifications.email: must be true or false"),
    ],
)
def test_bad_approval_settings_are_named_by_their_path(
    settings: dict[str, Any], problem: str
) -> None:
    problems = definition_problems(_with(**settings))
    assert len(problems) == 1
    assert problems[0].startswith(problem), problems


def test_good_settings_pass_and_read_with_their_defaults() -> None:
    definition = _with(
        requiredApprovals=2,
        approverGroups=["risk", "compliance.in"],
        timeout="1h30m",
        remindBefore="15m",
        notifications={"email": False, "slackWebhookUrl": "https://hooks.slack.com/x"},
    )
    assert definition_problems(definition) == []
    rules = approval_rules(definition)
    assert (rules.required_approvals, rules.allow_self_approval) == (2, False)
    assert rules.approver_groups == ("risk", "compliance.in")
    assert (rules.timeout_seconds, rules.remind_before_seconds) == (5400, 900)
    one = approval_rules(BFSI_TEMPLATE)
    assert (one.required_approvals, one.allow_self_approval, one.timeout) == (1, True, None)
    assert approval_rules(_with(requiredApprovals=3, allowSelfApproval=True)).allow_self_approval


def test_a_slack_url_on_a_private_address_follows_the_ssrf_policy() -> None:
    definition = _with(notifications={"slackWebhookUrl": "http://127.1:9000/hook"})
    assert address_problems(definition, allow_private=False) == [
        f"{AT}.notifications.slackWebhookUrl: must not point to a private or loopback address"
    ]
    assert address_problems(definition, allow_private=True) == []


@pytest.mark.parametrize(
    ("text", "seconds"), [("48h", 172800), ("30m", 1800), ("20s", 20), ("1h30m", 5400)]
)
def test_durations(text: str, seconds: int) -> None:
    assert durations.parse(text).total_seconds() == seconds
