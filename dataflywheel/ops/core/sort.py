from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from dataflywheel.ops.base import OpParams, Selection, Selector


class Sort(Selector):
    """Order rows by a column (stable; missing values last). Usually followed by ``head`` to take the top."""

    class Params(OpParams):
        by: str = Field(description="column to sort by, e.g. score_ifd")
        descending: bool = Field(False, description="largest first")

    def input_columns(self) -> list[str]:
        return [self.params.by]

    def select(self, table: pa.Table) -> Selection:
        order = "descending" if self.params.descending else "ascending"
        idx = pc.sort_indices(table, sort_keys=[(self.params.by, order, "at_end")])
        return Selection(np.asarray(idx.to_numpy(), dtype=np.int64))
