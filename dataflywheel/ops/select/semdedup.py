from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.lib.diversity import kmeans, matrix
from dataflywheel.ops.select.dedup import ClusterDedup, DedupParams


class SemDedup(ClusterDedup):
    """Semantic deduplication (SemDeDup, Abbas et al. 2023): k-means over embeddings, then inside each
    cluster every pair with cosine similarity >= ``threshold`` is a duplicate.

    Rows in a cluster are ranked, and a row is dropped when a higher-ranked row of its cluster is at
    least ``threshold`` similar; its kept duplicate is named in the drop log. The ranking follows the
    paper's default: farthest from the centroid first (``keep: farthest``, the "hard" prototypes the
    SemDeDup code keeps), or ``nearest``; ``keep_best`` ranks by a score column instead. Embeddings are
    L2-normalised here, so cosine = dot product.
    """

    class Params(DedupParams):
        column: str = Field("embedding_default", description="embedding column")
        threshold: float = Field(
            0.95, gt=0, le=1, description="cosine similarity at which rows are duplicates"
        )
        n_clusters: int = Field(100, ge=1, description="k-means clusters (SemDeDup: about n / 1000 or more)")
        keep: Literal["farthest", "nearest"] = Field(
            "farthest", description="which duplicate survives: farthest from the centroid (paper), or nearest"
        )
        seed: int | None = Field(None, description="k-means seed; the recipe's seed when unset")

    cluster_kind = "semdedup"

    def content_columns(self) -> list[str]:
        return [self.params.column]

    def clusters(self, table: pa.Table):
        p = self.params
        x = matrix(table, p.column)
        n = x.shape[0]
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        seed = p.seed if p.seed is not None else self.ctx.seed
        clusters, centroids = kmeans(x, p.n_clusters, seed) if n else (np.zeros(0, np.int64), None)
        score = self.best_scores(table)
        labels = np.arange(n)
        for c in np.unique(clusters):
            rows = np.flatnonzero(clusters == c)
            if score is not None:
                rank = rows[np.lexsort((rows, -np.nan_to_num(score[rows], nan=-np.inf)))]
            else:
                closeness = x[rows] @ centroids[c]  # cosine to the centroid: larger is nearer
                rank = rows[np.argsort(closeness if p.keep == "farthest" else -closeness, kind="stable")]
            sims = x[rank] @ x[rank].T
            np.fill_diagonal(sims, -1.0)
            sims = np.triu(sims, k=1)  # only higher-ranked rows (earlier in `rank`) can absorb a row
            for j in range(1, len(rank)):
                above = np.flatnonzero(sims[:j, j] >= p.threshold)
                if len(above):
                    labels[rank[j]] = labels[rank[above[0]]]
        labels = _resolve(labels)
        info = {"kmeans_clusters": len(np.unique(clusters)) if n else 0, "threshold": p.threshold}
        return labels, lambda i, j: f"{float(x[i] @ x[j]):.3f}", info


def _resolve(labels: np.ndarray) -> np.ndarray:
    """Follow absorbed-by links to their root so each group has one label, the position of its keeper."""
    out = labels.copy()
    for i in range(len(out)):
        r = i
        while out[r] != r:
            r = out[r]
        out[i] = r
    return out
