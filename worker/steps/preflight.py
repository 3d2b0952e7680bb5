"""What the engine checks when it takes up a run, before any step works: that every step still to
run could start on this worker. Each step's provider is built from its settings exactly as the
step will build it (environment variables read, URLs and templates checked), without calling
out, so a missing WhatsApp token fails the run when it starts, not after a reviewer approved it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.providers.content import content_provider
from worker.providers.messaging import messenger
from worker.providers.types import ProviderConfigError, ProviderContext
from worker.steps import RUNNERS
from worker.steps.context import StepError

# The step types whose settings name a provider, and how the step builds it.
_BUILDERS: dict[str, Callable[[dict[str, Any], ProviderContext], object]] = {
    "generate_content": content_provider,
    "send_message": messenger,
}


def check(steps: list[dict[str, Any]], start: int, context: ProviderContext) -> None:
    """StepError (with the step's index) for the first of `steps[start:]` that cannot run."""
    for index in range(start, len(steps)):
        step = steps[index]
        kind = step.get("type")
        if kind == "approval":
            continue
        if not isinstance(kind, str) or kind not in RUNNERS:
            raise StepError(f"unknown step type {kind!r}", index=index)
        build = _BUILDERS.get(kind)
        if build is None:
            continue
        try:
            build(step.get("settings", {}), context)
        except (ProviderConfigError, ValueError, TypeError) as exc:
            # ProviderConfigError names the setting; the others are settings of a wrong type
            # in a definition that skipped the workflow-file checks.
            raise StepError(str(exc) or type(exc).__name__, index=index) from None
