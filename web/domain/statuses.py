"""The status sets of public-api.md, one StrEnum each."""

from __future__ import annotations

from enum import StrEnum


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PENDING_APPROVAL = "pending_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class ComplianceStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"


class RowDecision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


class SendStatus(StrEnum):
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    REJECTED = "rejected"


# Not a result: a row an HTTP messaging provider is being asked to send right now. Written (and
# committed) just before the call and replaced by the result right after; a row still `sending`
# when a re-run starts was cut off by a crash and is reported failed, never sent again.
SENDING = "sending"
