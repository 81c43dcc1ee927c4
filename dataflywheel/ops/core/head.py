from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from dataflywheel.ops.base import OpParams, Selection, Selector


class Head(Selector):
    """Keep the first n rows (or a fraction of them) in the current order (after ``sort``: the top n)."""

    class Params(OpParams):
        n: int | None = Field(None, ge=0, description="number of rows to keep")
        fraction: float | None = Field(
            None, gt=0, le=1, description="fraction of the rows to keep, rounded down"
        )

        @model_validator(mode="after")
        def _n_or_fraction(self):
            if (self.n is None) == (self.fraction is None):
                raise ValueError("give exactly one of n or fraction")
            return self

    def select(self, table: pa.Table) -> Selection:
        n = self.params.n if self.params.n is not None else int(table.num_rows * self.params.fraction)
        return Selection(np.arange(min(n, table.num_rows)), reason=f"beyond the first {n}")
