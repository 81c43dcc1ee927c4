from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.ops.base import OpParams, Selection, Selector
from dataflywheel.ops.select import textview
from dataflywheel.ops.select.minhash_dedup import cluster_selection


class ExactDedup(Selector):
    """Exact duplicate removal on normalized text: one row kept per group of identical texts.

    Normalization lowercases (optional), collapses whitespace and (optional) drops punctuation, so rows
    that differ only in case, spacing or punctuation count as the same. The kept row is the best by
    ``keep_best`` or else the first; kept rows get ``tag_exact_cluster`` and ``score_exact_cluster_size``.
    """

    class Params(OpParams):
        field: Literal["instruction", "response", "conversation"] = Field(
            "conversation", description="which text to compare"
        )
        lowercase: bool = Field(True, description="ignore case")
        ignore_punctuation: bool = Field(False, description="ignore punctuation and symbols")
        keep_best: str | None = Field(None, description="score column: keep the row with the highest value")

    def input_columns(self) -> list[str]:
        return [S.MESSAGES] + ([self.params.keep_best] if self.params.keep_best else [])

    def output_columns(self) -> list[str]:
        return ["tag_exact_cluster", "score_exact_cluster_size"]

    def select(self, table: pa.Table) -> Selection:
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
        score = None
        if p.keep_best:
            score = np.asarray(table.column(p.keep_best).to_numpy(zero_copy_only=False), dtype=np.float64)
        return cluster_selection(
            table.column(S.ID).to_pylist(),
            labels,
            score,
            "exact",
            lambda i, j: "1.00",
            {},
            reason="exact duplicate",
        )
