from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.lib.diversity import kcenter_greedy, matrix
from dataflywheel.lib.tokens import most_that_fit
from dataflywheel.ops.base import BudgetParams, Selection, Selector


class KCenterSelect(Selector):
    """Pick a diverse subset: k-center greedy (farthest-first traversal) over an embedding column.

    Each pick is the row farthest from everything picked so far, so the subset covers the embedding
    space with the smallest radius a greedy can guarantee (a 2-approximation of the k-center optimum;
    Sener and Savarese, "Active Learning for CNNs: A Core-Set Approach", ICLR 2018). With a tokens
    budget, picks are kept in pick order while they fit. The rows keep their input order.
    """

    class Params(BudgetParams):
        column: str = Field("embedding_default", description="embedding column to measure distance in")
        first: int | None = Field(
            None, ge=0, description="position of the first pick (default: seeded random)"
        )
        seed: int | None = Field(None, description="seed of the first pick; the recipe's seed when unset")

    def input_columns(self) -> list[str]:
        return [self.params.column]

    def select(self, table: pa.Table) -> Selection:
        p = self.params
        x = matrix(table, p.column)
        n = x.shape[0]
        costs = self.token_costs(table) if p.tokens is not None else None
        k = p.budget(n) if costs is None else most_that_fit(costs, p.tokens)
        if n == 0 or k == 0:
            return Selection(np.zeros(0, dtype=np.int64), reason="not among the k centers")
        seed = p.seed if p.seed is not None else self.ctx.seed
        first = p.first if p.first is not None else int(np.random.default_rng(seed).integers(n))
        picks = p.keep(kcenter_greedy(x, k, first), costs)  # in pick order, while they fit
        return Selection(
            np.sort(picks),
            reason=f"not among the {len(picks)} k-centers",
            stats={"picked_in_order": [int(i) for i in picks[:20]]},
        )
