from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from dataflywheel.lib.diversity import diverse_greedy, matrix
from dataflywheel.ops.base import OpParams, Selection, Selector


class DiverseFilter(Selector):
    """Score-first, diversity-aware selection: walk rows best first (by ``order_by``, else input order)
    and keep a row only when its cosine similarity to every row kept so far is below ``tau``; stop at
    ``k`` rows. The Repr Filter of DEITA (Liu et al., ICLR 2024), whose default tau is 0.9.
    """

    class Params(OpParams):
        column: str = Field("embedding_default", description="embedding column (cosine similarity)")
        tau: float = Field(
            0.9, gt=-1, le=1, description="keep a row only if its cosine to every kept row is below"
        )
        k: int | None = Field(None, ge=1, description="stop after this many rows (default: no limit)")
        order_by: str | None = Field(None, description="score column to walk in descending order")

    def input_columns(self) -> list[str]:
        return [self.params.column] + ([self.params.order_by] if self.params.order_by else [])

    def select(self, table: pa.Table) -> Selection:
        p = self.params
        x = matrix(table, p.column)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        if p.order_by:
            order = pc.sort_indices(table, sort_keys=[(p.order_by, "descending", "at_end")]).to_numpy()
        else:
            order = np.arange(x.shape[0])
        kept = diverse_greedy(x, order, p.tau, p.k)
        return Selection(np.sort(kept), reason=f"cosine >= {p.tau} to a better row, or beyond k")
