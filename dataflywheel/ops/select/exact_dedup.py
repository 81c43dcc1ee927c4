from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from dataflywheel.lib import textview
from dataflywheel.ops.select.dedup import ClusterDedup, DedupParams


class ExactDedup(ClusterDedup):
    """Exact duplicate removal on normalized text: one row kept per group of identical texts.

    Normalization lowercases (optional), collapses whitespace and (optional) drops punctuation, so rows
    that differ only in case, spacing or punctuation count as the same. The kept row is the best by
    ``keep_best`` or else the first; kept rows get ``tag_exact_cluster`` and ``score_exact_cluster_size``.
    """

    class Params(DedupParams):
        field: Literal["instruction", "response", "conversation"] = Field(
            "conversation", description="which text to compare"
        )
        lowercase: bool = Field(True, description="ignore case")
        ignore_punctuation: bool = Field(False, description="ignore punctuation and symbols")

    cluster_kind = "exact"
    reason = "exact duplicate"

    def clusters(self, table: pa.Table):
        p = self.params
        arr = pa.array(textview.texts(table, p.field), pa.string())
        if p.lowercase:
            arr = pc.utf8_lower(arr)
        if p.ignore_punctuation:
            arr = pc.replace_substring_regex(arr, r"[^\p{L}\p{N}\s]+", "")
        arr = pc.utf8_trim(pc.replace_substring_regex(arr, r"\s+", " "), " ")
        groups = pc.dictionary_encode(arr).indices.to_numpy(zero_copy_only=False)
        _, first = np.unique(groups, return_index=True)
        labels = first[groups]  # label = the first position holding the same text
        return labels, lambda i, j: "1.00", {}
