from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.ops.base import BudgetParams, Selection, Selector


class Sample(Selector):
    """Keep a seeded uniform random sample of k rows (a fraction of them, or as many as fit a tokens
    budget), in their original order.

    The baseline every selector must beat: the data-efficiency experiments compare against "random k".
    """

    class Params(BudgetParams):
        seed: int | None = Field(None, description="random seed; the recipe's seed when unset")

    def select(self, table: pa.Table) -> Selection:
        n = table.num_rows
        p = self.params
        seed = p.seed if p.seed is not None else self.ctx.seed
        if p.tokens is not None:  # a random order, kept while the rows fit the tokens
            picked = p.keep(np.random.default_rng(seed).permutation(n), self.token_costs(table))
            return Selection(np.sort(picked), reason=f"not in the random sample of {p.tokens} tokens")
        k = p.budget(n)
        picked = np.random.default_rng(seed).choice(n, size=k, replace=False)
        return Selection(np.sort(picked), reason=f"not in the random sample of {k}")
