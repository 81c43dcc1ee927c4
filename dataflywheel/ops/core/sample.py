from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.ops.base import BudgetParams, Selection, Selector


class Sample(Selector):
    """Keep a seeded uniform random sample of k rows, or of a fraction of the rows, in their original order.

    The baseline every selector must beat: the data-efficiency experiments compare against "random k".
    """

    class Params(BudgetParams):
        seed: int | None = Field(None, description="random seed; the recipe's seed when unset")

    def select(self, table: pa.Table) -> Selection:
        n = table.num_rows
        k = self.params.budget(n)
        seed = self.params.seed if self.params.seed is not None else self.ctx.seed
        picked = np.random.default_rng(seed).choice(n, size=k, replace=False)
        return Selection(np.sort(picked), reason=f"not in the random sample of {k}")
