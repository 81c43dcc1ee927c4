from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.lib import minhash, textview
from dataflywheel.ops.select.dedup import ClusterDedup, DedupParams

# Columns shard_features adds to the selector's view (never written to the output).
SIGNATURE, BAND_KEYS, NONEMPTY = "_minhash_signature", "_minhash_band_keys", "_minhash_nonempty"


def _matrix(column: pa.ChunkedArray, dtype) -> np.ndarray:
    """A fixed-size-list column as a (rows, width) array."""
    col = column.combine_chunks()
    flat = np.ascontiguousarray(col.flatten().to_numpy(zero_copy_only=False), dtype=dtype)
    return flat.reshape(len(col), -1) if len(col) else flat.reshape(0, col.type.list_size)


class MinHashDedup(ClusterDedup):
    """Near-duplicate removal with MinHash LSH: one row is kept per cluster of near-duplicates.

    Jaccard similarity of word (or character) n-gram shingles is estimated with ``num_perm`` MinHash
    permutations. LSH banding, with the (bands, rows) that minimise the weighted false-positive and
    false-negative probabilities at ``threshold``, proposes candidate pairs; their exact shingle Jaccard
    is checked against the threshold before union-find joins them. The kept row is the best by
    ``keep_best`` (a score column) or else the first. Every kept row gets ``tag_minhash_cluster`` (the
    kept row's id) and ``score_minhash_cluster_size``; dropped rows name their kept duplicate in the
    drop log. Reference: Broder (1997); the Data-Juicer and NeMo Curator MinHash deduplicators.
    """

    class Params(DedupParams):
        field: Literal["instruction", "response", "conversation"] = Field(
            "conversation", description="which text to compare"
        )
        threshold: float = Field(
            0.8, gt=0, lt=1, description="Jaccard similarity above which rows are duplicates"
        )
        num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations")
        ngram: int = Field(5, ge=1, description="shingle size in units")
        unit: Literal["word", "char"] = Field("word", description="shingles of words or of characters")
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

    cluster_kind = "minhash"

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

    def clusters(self, table: pa.Table):
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
        return labels, lambda i, j: f"{(sig[i] == sig[j]).mean():.2f}", info
