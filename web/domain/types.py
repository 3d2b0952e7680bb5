"""Names for the free-form JSON the domain passes around, and the one place a database row
becomes a typed read model (JSONB decoded here, nowhere else). Imports only msgspec.

A row's input fields and a step's settings are genuinely free-form (the workflow author and
the API caller choose the keys), so they stay dicts, but named ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import msgspec

RowData = dict[str, Any]  # one csvData row: the caller's own field names
StepSettings = dict[str, Any]  # the `settings` of one workflow step
Definition = dict[str, Any]  # a workflow definition (id, name, steps): from a file, or as stored
ExecutionOutput = dict[str, Any]  # public-api.md "Get Execution Results" `output`
StepResult = dict[str, Any]  # what one step reports when done, kept in execution.step_results
TokenUsage = dict[str, Any]  # an LLM provider's `usage` for one row, as the provider sent it


class ReadModel(msgspec.Struct, frozen=True):
    """Base of the domain's read models: `JSON_COLUMNS` names the JSONB columns, which raw SQL
    (asyncpg without a codec) returns as text."""

    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ()


Model = TypeVar("Model", bound=ReadModel)


_ENCODER = msgspec.json.Encoder()


def json_text(value: Any) -> str:
    """`value` as JSON text, for a JSONB parameter of raw SQL: what json.dumps gives, compact,
    at several times its speed (the worker encodes each row's compliance reasons, each step's
    result and the output this way)."""
    return _ENCODER.encode(value).decode()


def from_row(row: Mapping[str, Any], model: type[Model]) -> Model:
    """One database row as `model`: JSONB text decoded, then converted (cheap: msgspec).
    Columns the model does not name are ignored; the row is copied only if it holds text."""
    decoded = {
        column: msgspec.json.decode(value)
        for column in model.JSON_COLUMNS
        if isinstance(value := row.get(column), str)
    }
    return msgspec.convert({**row, **decoded} if decoded else row, model)
