"""`compliance_check`: sets each row's compliance status and reasons (web.domain.compliance).
A row whose content generation failed fails here, its generation error first among the reasons."""

from __future__ import annotations

from typing import Any

from web.domain import compliance, execution_rows
from web.domain.statuses import ComplianceStatus
from worker.steps.context import StepContext


async def run(ctx: StepContext) -> dict[str, Any]:
    rows = await ctx.rows()  # as generate_content handed them on, when it ran in this job
    items = []
    for row in rows:
        verdict = compliance.check(ctx.step_settings, row.data, row.generated_content)
        reasons = verdict.reasons
        if row.generated_content is None and row.error:
            # The provider's error first: it is why there is nothing to check.
            reasons = [row.error, *reasons]
        items.append((row.id, str(verdict.status), reasons))
    await execution_rows.save_compliance(items)
    passed = sum(1 for item in items if item[1] == ComplianceStatus.PASSED)
    return {"passed": passed, "failed": len(items) - passed}
