"""web.domain.types.from_row: the one place a database row becomes a read model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar
from uuid import UUID

import msgspec
import pytest

from web.domain.types import ReadModel, from_row


class Sample(ReadModel, frozen=True):
    JSON_COLUMNS: ClassVar[tuple[str, ...]] = ("data", "extra")

    id: UUID
    data: dict[str, object]
    extra: list[str] | None
    at: datetime


def test_jsonb_text_and_decoded_json_give_the_same_model() -> None:
    at = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    raw = {"id": UUID(int=1), "data": '{"a": [1, 2]}', "extra": None, "at": at, "other": 5}
    loaded = {**raw, "data": {"a": [1, 2]}}

    assert from_row(raw, Sample) == from_row(loaded, Sample)
    assert from_row(raw, Sample) == Sample(id=UUID(int=1), data={"a": [1, 2]}, extra=None, at=at)
    assert raw["data"] == '{"a": [1, 2]}'  # the row itself is left as it was


def test_a_row_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        from_row({"id": "not a uuid", "data": "{}", "extra": None, "at": None}, Sample)
