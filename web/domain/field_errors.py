"""The error of one field of a form or one option of a command: `FieldError` is InvalidInput
that names its field, so the dashboard shows it next to that field. Imports only
web.domain.errors."""

from __future__ import annotations

from web.domain.errors import Conflict, DomainError, InvalidInput


class FieldError(InvalidInput):
    """InvalidInput about one field (`field` is the form field's name, e.g. "expires_at")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class FieldConflict(Conflict):
    """Conflict (409) caused by one field's value, e.g. an email already taken."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def field_of(error: DomainError) -> str | None:
    """The form field an error is about, or None for an error of the whole form."""
    field = getattr(error, "field", None)
    return field if isinstance(field, str) else None
