from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.ops.base import Mapper, OpParams


class SelectColumns(Mapper):
    """Keep only the named columns (``id`` and the lineage columns always stay)."""

    class Params(OpParams):
        columns: list[str] = Field(min_length=1, description="columns to keep, e.g. [messages, score_ifd]")

    def input_columns(self) -> list[str]:
        return list(self.params.columns)

    def columns_after(self, available: Sequence[str]) -> list[str]:
        keep = set(self.params.columns) | S.PROTECTED_COLUMNS
        return [c for c in available if c in keep]

    def map(self, batch: pa.Table) -> pa.Table:
        return batch.select(self.columns_after(batch.column_names))
