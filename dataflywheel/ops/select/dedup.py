"""The shared shape of deduplication: an op finds clusters of copies, the base keeps one row per cluster.

A dedup op writes ``clusters(table)``: for each row the position of the row representing its cluster,
how similar a row is to its representative (for the drop log), and statistics. The base keeps the
cluster's best row by ``keep_best`` (else the representative), names the kept duplicate of every dropped
row, and writes ``tag_<kind>_cluster`` (the kept row's id) and ``score_<kind>_cluster_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.ops.base import OpParams, Selection, Selector


class DedupParams(OpParams):
    keep_best: str | None = Field(None, description="score column: keep the row with the highest value")


class ClusterDedup(Selector):
    """Base of the dedup ops (see the module docstring)."""

    Params: ClassVar[type[OpParams]] = DedupParams
    cluster_kind: ClassVar[str] = "dedup"  # names the output columns: tag_<kind>_cluster
    reason: ClassVar[str | None] = None  # the drop reason (default: near-duplicate (<kind>))

    def clusters(self, table: pa.Table) -> tuple[np.ndarray, Callable[[int, int], str], dict]:
        raise NotImplementedError

    def content_columns(self) -> list[str]:
        return [S.MESSAGES]

    def input_columns(self) -> list[str]:
        return self.content_columns() + ([self.params.keep_best] if self.params.keep_best else [])

    def output_columns(self) -> list[str]:
        return [f"tag_{self.cluster_kind}_cluster", f"score_{self.cluster_kind}_cluster_size"]

    def best_scores(self, table: pa.Table) -> np.ndarray | None:
        if not self.params.keep_best:
            return None
        return np.asarray(
            table.column(self.params.keep_best).to_numpy(zero_copy_only=False), dtype=np.float64
        )

    def select(self, table: pa.Table) -> Selection:
        labels, similarity, info = self.clusters(table)
        return cluster_selection(
            table.column(S.ID).to_pylist(),
            labels,
            self.best_scores(table),
            self.cluster_kind,
            similarity,
            info,
            self.reason,
        )


def cluster_selection(
    ids: list[str],
    labels: np.ndarray,
    score: np.ndarray | None,
    kind: str,
    similarity,
    info: dict,
    reason: str | None = None,
) -> Selection:
    """Keep one row per cluster and explain the rest. ``labels[i]`` is the position of the row that
    represents i's cluster; with a score, the cluster's best row is kept instead (ties: the first)."""
    n = len(ids)
    keeper = np.asarray(labels, dtype=np.int64).copy()
    if score is not None:
        s = np.where(np.isnan(score), -np.inf, score)
        order = np.lexsort((np.arange(n), -s, labels))  # by cluster, best score first, then position
        first = np.ones(n, dtype=bool)
        first[1:] = labels[order][1:] != labels[order][:-1]
        best = dict(zip(labels[order][first].tolist(), order[first].tolist(), strict=True))
        keeper = np.array([best[c] for c in labels.tolist()], dtype=np.int64)
    sizes = np.bincount(labels, minlength=n)[labels]
    kept = np.flatnonzero(keeper == np.arange(n))
    dropped = np.flatnonzero(keeper != np.arange(n))
    details = {
        int(i): f"duplicate of {ids[keeper[i]]} (similarity {similarity(i, keeper[i])})" for i in dropped
    }
    big = sorted(((int(sizes[k]), ids[k]) for k in kept if sizes[k] > 1), reverse=True)
    stats = {
        **info,
        "clusters_with_duplicates": len(big),
        "duplicate_rows": len(dropped),
        "largest_clusters": [{"kept": i, "size": s} for s, i in big[:10]],
    }
    return Selection(
        kept,
        reason=reason or f"near-duplicate ({kind})",
        details=details,
        stats=stats,
        columns={
            f"tag_{kind}_cluster": pa.array([ids[k] for k in keeper], pa.string()),
            f"score_{kind}_cluster_size": pa.array(sizes.astype(np.float64)),
        },
    )
