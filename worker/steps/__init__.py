"""Step types of the engine: one module each, all with the same signature,
`async def run(ctx: StepContext) -> dict` returning a small JSON summary of what it did
(StepContext and the step errors are in worker.steps.context). `approval` is no module: the
engine pauses there itself."""

from __future__ import annotations

from worker.steps import compliance_check, generate_content, send_message
from worker.steps.context import StepRunner

RUNNERS: dict[str, StepRunner] = {
    "generate_content": generate_content.run,
    "compliance_check": compliance_check.run,
    "send_message": send_message.run,
}
