from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from dataflywheel.data import schema as S
from dataflywheel.errors import FlywheelError
from dataflywheel.ops.base import OpParams, Selection, Selector


class Mix(Selector):
    """Mix several inputs by weights or by counts: a seeded sample without replacement from each source.

    Sources are the inputs' names (the ``origin`` column). With ``weights`` and no ``total``, the mix is
    the largest one that keeps the proportions without sampling any source twice. Sources not named are
    dropped. Asking for more rows than a source has is an error (it would silently change the mix).
    """

    class Params(OpParams):
        weights: dict[str, float] | None = Field(None, description="source name -> relative weight")
        counts: dict[str, int] | None = Field(None, description="source name -> exact number of rows")
        total: int | None = Field(None, ge=1, description="rows in the mix when mixing by weights")
        seed: int | None = Field(None, description="random seed; the recipe's seed when unset")
        shuffle: bool = Field(False, description="shuffle the mix instead of keeping the input order")

        @model_validator(mode="after")
        def _weights_or_counts(self):
            if (self.weights is None) == (self.counts is None):
                raise ValueError("give exactly one of weights or counts")
            if self.weights is not None and (
                not self.weights
                or any(w < 0 for w in self.weights.values())
                or sum(self.weights.values()) <= 0
            ):
                raise ValueError("weights must be non-negative and not all zero")
            if self.counts is not None and any(c < 0 for c in self.counts.values()):
                raise ValueError("counts must be non-negative")
            if self.counts is not None and self.total is not None:
                raise ValueError("total goes with weights; with counts the total is their sum")
            return self

    reads = (S.ORIGIN,)

    def _counts(self, available: dict[str, int]) -> dict[str, int]:
        p = self.params
        wanted = p.counts if p.counts is not None else p.weights
        missing = [s for s in wanted if s not in available]
        if missing:
            raise FlywheelError(f"mix: unknown source(s) {missing}; the sources are {sorted(available)}")
        if p.counts is not None:
            return dict(p.counts)
        total_w = sum(p.weights.values())
        share = {s: w / total_w for s, w in p.weights.items()}
        total = p.total
        if total is None:
            total = int(min(available[s] / f for s, f in share.items() if f > 0))
        counts = {s: int(np.floor(f * total)) for s, f in share.items()}
        # Largest remainders get the rows lost to rounding, so the mix has exactly `total` rows.
        rest = total - sum(counts.values())
        for s in sorted(share, key=lambda s: share[s] * total - counts[s], reverse=True)[:rest]:
            counts[s] += 1
        return counts

    def select(self, table: pa.Table) -> Selection:
        origins = np.asarray(table.column(S.ORIGIN).to_numpy(zero_copy_only=False))
        names, sizes = np.unique(origins, return_counts=True)
        available = dict(zip(names.tolist(), sizes.tolist(), strict=True))
        counts = self._counts(available)
        seed = self.params.seed if self.params.seed is not None else self.ctx.seed
        rng = np.random.default_rng(seed)
        picked = []
        for source in sorted(counts):
            if counts[source] > available[source]:
                raise FlywheelError(
                    f"mix: source '{source}' has {available[source]} rows, {counts[source]} asked"
                )
            rows = np.flatnonzero(origins == source)
            picked.append(rng.choice(rows, size=counts[source], replace=False))
        idx = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
        idx = rng.permutation(idx) if self.params.shuffle else np.sort(idx)
        return Selection(idx.astype(np.int64), reason="not drawn into the mix")
