from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.ops.base import OpParams, Selection, Selector
from dataflywheel.ops.select import minhash, textview

# Columns shard_features adds to the selector's view (never written to the output).
SIGNATURE, BAND_KEYS, NONEMPTY = "_minhash_signature", "_minhash_band_keys", "_minhash_nonempty"


def _matrix(column: pa.ChunkedArray, dtype) -> np.ndarray:
    """A fixed-size-list column as a (rows, width) array."""
    col = column.combine_chunks()
    flat = np.ascontiguousarray(col.flatten().to_numpy(zero_copy_only=False), dtype=dtype)
    return flat.reshape(len(col), -1) if len(col) else flat.reshape(0, col.type.list_size)


class MinHashDedup(Selector):
    """Near-duplicate removal with MinHash LSH: one row is kept per cluster of near-duplicates.

    Jaccard similarity of word (or character) n-gram shingles is estimated with ``num_perm`` MinHash
    permutations. LSH banding, with the (bands, rows) that minimise the weighted false-positive and
    false-negative probabilities at ``threshold``, proposes candidate pairs; their exact shingle Jaccard
    is checked against the threshold before union-find joins them. The kept row is the best by
    ``keep_best`` (a score column) or else the first. Every kept row gets ``tag_minhash_cluster`` (the
    kept row's id) and ``score_minhash_cluster_size``; dropped rows name their kept duplicate in the
    drop log. Reference: Broder (1997); the Data-Juicer and NeMo Curator MinHash deduplicators.
    """

    class Params(OpParams):
        field: Literal["instruction", "response", "conversation"] = Field(
            "conversation", description="which text to compare"
        )
        threshold: float = Field(
            0.8, gt=0, lt=1, description="Jaccard similarity above which rows are duplicates"
        )
        num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations")
        ngram: int = Field(5, ge=1, description="shingle size in units")
        unit: Literal["word", "char"] = Field("word", description="shingles of words or of characters")
        keep_best: str | None = Field(None, description="score column: keep the row with the highest value")
        seed: int = Field(1, description="seed of the permutations")
        verify: Literal["exact", "signature", "none"] = Field(
            "exact", description="check candidate pairs by exact shingle Jaccard, by signature, or not at all"
        )
        recall_weight: float = Field(
            0.95,
            gt=0,
            lt=1,
            description="weight of misses vs false candidates when choosing LSH bands (datasketch: 0.5)",
        )

    def input_columns(self) -> list[str]:
        cols = [S.MESSAGES]
        return cols + ([self.params.keep_best] if self.params.keep_best else [])

    def output_columns(self) -> list[str]:
        return ["tag_minhash_cluster", "score_minhash_cluster_size"]

    def shard_features(self, table: pa.Table) -> dict:
        """Signatures and LSH band keys depend on one row each: computed per shard, in parallel. Grouping
        the keys into candidate pairs and the connected components stay global (``select``)."""
        p = self.params
        sig, nonempty = minhash.signature_block(
            textview.texts(table, p.field), p.num_perm, p.ngram, p.unit, p.seed
        )
        bands, rows = minhash.optimal_bands(p.threshold, p.num_perm, 1.0 - p.recall_weight, p.recall_weight)
        keys = minhash.band_keys(sig, bands, rows)
        return {
            SIGNATURE: pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel(), pa.uint32()), p.num_perm),
            BAND_KEYS: pa.FixedSizeListArray.from_arrays(pa.array(keys.ravel(), pa.uint64()), bands),
            NONEMPTY: pa.array(nonempty, pa.bool_()),
        }

    def select(self, table: pa.Table) -> Selection:
        p = self.params
        texts = textview.texts(table, p.field)
        if SIGNATURE in table.column_names:
            sig = _matrix(table.column(SIGNATURE), np.uint32)
            keys = _matrix(table.column(BAND_KEYS), np.uint64)
            nonempty = np.asarray(table.column(NONEMPTY).to_numpy(zero_copy_only=False), dtype=bool)
            labels, info = minhash.clusters_from_signatures(
                texts, sig, nonempty, p.threshold, p.ngram, p.unit, p.verify, p.recall_weight, keys
            )
        else:
            labels, sig, info = minhash.near_duplicate_clusters(
                texts, p.threshold, p.num_perm, p.ngram, p.unit, p.seed, p.verify, p.recall_weight
            )
        score = None
        if p.keep_best:
            score = np.asarray(table.column(p.keep_best).to_numpy(zero_copy_only=False), dtype=np.float64)
        return cluster_selection(
            table.column(S.ID).to_pylist(),
            labels,
            score,
            "minhash",
            lambda i, j: f"{(sig[i] == sig[j]).mean():.2f}",
            info,
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
