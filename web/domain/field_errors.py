"""The error of one field of a form or one option of a command: `FieldError` is InvalidInput
that names its field, so the dashboard shows it next to that field. Imports only
web.domain.errors."""

from __future__ import annotations

from web.domain.errors import InvalidInput


class FieldError(InvalidInput):
    """InvalidInput about one field (`field` is the form field's name, e.g. "expires_at")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
