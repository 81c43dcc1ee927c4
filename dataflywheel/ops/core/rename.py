from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
from pydantic import Field, field_validator

from dataflywheel.data import schema as S
from dataflywheel.ops.base import CONTENT_COLUMNS, Mapper, OpParams

FIXED = S.PROTECTED_COLUMNS | set(CONTENT_COLUMNS)


class Rename(Mapper):
    """Rename columns, e.g. an extra field ``quality`` to ``score_quality`` so filters and reports see it."""

    class Params(OpParams):
        mapping: dict[str, str] = Field(min_length=1, description="old name -> new name")

        @field_validator("mapping")
        @classmethod
        def _not_fixed(cls, mapping: dict[str, str]) -> dict[str, str]:
            bad = sorted((set(mapping) | set(mapping.values())) & FIXED)
            if bad:
                raise ValueError(
                    f"cannot rename to or from {bad}: the engine and the formats own those columns"
                )
            if len(set(mapping.values())) != len(mapping):
                raise ValueError("two columns cannot get the same new name")
            return mapping

    def input_columns(self) -> list[str]:
        return list(self.params.mapping)

    def output_columns(self) -> list[str]:
        return list(self.params.mapping.values())

    def columns_after(self, available: Sequence[str]) -> list[str]:
        m = self.params.mapping
        clash = [new for old, new in m.items() if new in available and new not in m]
        if clash:
            raise ValueError(f"rename: column(s) {clash} already exist")
        return [m.get(c, c) for c in available]

    def map(self, batch: pa.Table) -> pa.Table:
        return batch.rename_columns(self.columns_after(batch.column_names))
