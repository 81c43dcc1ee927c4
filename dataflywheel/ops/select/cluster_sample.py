from __future__ import annotations

from itertools import zip_longest

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.lib.diversity import kmeans, matrix
from dataflywheel.ops.base import BudgetParams, Selection, Selector


class ClusterSample(Selector):
    """Cluster-balanced sampling: k-means over an embedding column, then an equal quota per cluster.

    Small clusters give all their rows; what they cannot fill goes to the larger ones, so the budget is
    met exactly. Inside a cluster the rows closest to the centroid go first, or the best by
    ``keep_best``, or a seeded random sample. Kept rows get ``tag_cluster``.
    """

    class Params(BudgetParams):
        column: str = Field("embedding_default", description="embedding column to cluster")
        n_clusters: int = Field(50, ge=1, description="k-means clusters")
        within: str = Field(
            "random", pattern="^(random|centroid)$", description="random or centroid (nearest)"
        )
        keep_best: str | None = Field(None, description="score column: inside a cluster, best rows first")
        seed: int | None = Field(None, description="seed; the recipe's seed when unset")

    def input_columns(self) -> list[str]:
        return [self.params.column] + ([self.params.keep_best] if self.params.keep_best else [])

    def output_columns(self) -> list[str]:
        return ["tag_cluster"]

    def select(self, table: pa.Table) -> Selection:
        p = self.params
        x = matrix(table, p.column)
        n = x.shape[0]
        k = p.budget(n) if p.tokens is None else n
        seed = p.seed if p.seed is not None else self.ctx.seed
        labels, centroids = kmeans(x, p.n_clusters, seed)
        rng = np.random.default_rng(seed)
        members = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
        for c, rows in members.items():  # order each cluster by preference
            if p.keep_best:
                s = np.asarray(table.column(p.keep_best).to_numpy(zero_copy_only=False), dtype=np.float64)[
                    rows
                ]
                members[c] = rows[np.lexsort((rows, -np.nan_to_num(s, nan=-np.inf)))]
            elif p.within == "centroid":
                members[c] = rows[np.argsort(((x[rows] - centroids[c]) ** 2).sum(1), kind="stable")]
            else:
                members[c] = rng.permutation(rows)
        if p.tokens is not None:  # round-robin over the clusters (balanced), kept while the rows fit
            order = [r for rnd in zip_longest(*members.values()) for r in rnd if r is not None]
            picked = p.keep(order, self.token_costs(table))
            quota = {c: int(np.isin(r, picked).sum()) for c, r in members.items()}
        else:
            quota = balanced_quotas({c: len(r) for c, r in members.items()}, k)
            picked = (
                np.concatenate([members[c][:q] for c, q in quota.items()]) if quota else np.zeros(0, np.int64)
            )
        return Selection(
            np.sort(picked).astype(np.int64),
            reason="over its cluster's quota",
            columns={"tag_cluster": pa.array([str(c) for c in labels])},
            stats={"clusters": len(members), "quota": {str(c): q for c, q in quota.items()}},
        )


def balanced_quotas(sizes: dict, k: int) -> dict:
    """Equal shares of k; clusters smaller than their share give the rest to the others (water-filling)."""
    quota = dict.fromkeys(sizes, 0)
    left, open_ = k, sorted(sizes, key=lambda c: sizes[c])
    while left > 0 and open_:
        share = left // len(open_)
        if share == 0:
            for c in sorted(open_, key=lambda c: -sizes[c])[:left]:
                quota[c] += 1
            break
        still = []
        for c in open_:
            take = min(share, sizes[c] - quota[c])
            quota[c] += take
            left -= take
            if quota[c] < sizes[c]:
                still.append(c)
        open_ = still
    return quota
