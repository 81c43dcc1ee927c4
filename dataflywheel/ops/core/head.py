from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.ops.base import OpParams, Selection, Selector


class Head(Selector):
    """Keep the first n rows in the current order (after ``sort``: the top n)."""

    class Params(OpParams):
        n: int = Field(ge=0, description="number of rows to keep")

    def select(self, table: pa.Table) -> Selection:
        return Selection(
            np.arange(min(self.params.n, table.num_rows)), reason=f"beyond the first {self.params.n}"
        )
