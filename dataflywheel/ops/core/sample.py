from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from dataflywheel.ops.base import OpParams, Selection, Selector


class Sample(Selector):
    """Keep a seeded uniform random sample of k rows, or of a fraction of the rows, in their original order.

    The baseline every selector must beat: the data-efficiency experiments compare against "random k".
    """

    class Params(OpParams):
        k: int | None = Field(None, ge=0, description="number of rows to keep (all of them if fewer)")
        fraction: float | None = Field(None, gt=0, le=1, description="fraction of rows to keep, rounded down")
        seed: int | None = Field(None, description="random seed; the recipe's seed when unset")

        @model_validator(mode="after")
        def _k_or_fraction(self):
            if (self.k is None) == (self.fraction is None):
                raise ValueError("give exactly one of k or fraction")
            return self

    def select(self, table: pa.Table) -> Selection:
        n = table.num_rows
        k = self.params.k if self.params.k is not None else int(n * self.params.fraction)
        k = min(k, n)
        seed = self.params.seed if self.params.seed is not None else self.ctx.seed
        picked = np.random.default_rng(seed).choice(n, size=k, replace=False)
        return Selection(np.sort(picked), reason=f"not in the random sample of {k}")
