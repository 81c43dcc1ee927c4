from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.lib import textview
from dataflywheel.lib.rouge import RougePool
from dataflywheel.ops.select.dedup import ClusterDedup, DedupParams


class RougeDedup(ClusterDedup):
    """Near-duplicate removal by ROUGE-L, as Self-Instruct keeps its task pool: rows are taken in order
    (best first with ``keep_best``) and a row is dropped when its ROUGE-L F-measure (no stemming) to a row
    already kept exceeds ``threshold`` (paper: 0.7), so no two kept rows exceed it. The comparison skips
    pairs whose word overlap cannot reach the threshold (``lib.rouge``), giving the same decisions as
    comparing every pair with ``rouge_score``.
    """

    class Params(DedupParams):
        field: Literal["instruction", "response", "conversation"] = Field(
            "instruction", description="which text to compare"
        )
        column: str | None = Field(
            None, description="compare this text column where a row has it (else `field`)"
        )
        threshold: float = Field(0.7, gt=0, le=1, description="ROUGE-L above this is a duplicate")

    cluster_kind = "rouge"

    def content_columns(self) -> list[str]:
        return super().content_columns() + ([self.params.column] if self.params.column else [])

    def clusters(self, table: pa.Table):
        p = self.params
        texts = textview.texts(table, p.field)
        if p.column and p.column in table.column_names:  # rows without the column fall back to `field`
            texts = [
                t if t is not None else f
                for t, f in zip(table.column(p.column).to_pylist(), texts, strict=True)
            ]
        best = self.best_scores(table)
        order = (
            np.arange(len(texts))
            if best is None
            else np.argsort(-np.nan_to_num(best, nan=-np.inf), kind="stable")
        )
        pool = RougePool(p.threshold)
        kept_at: list[int] = []  # pool position -> row
        labels = np.arange(len(texts))
        scores: dict[int, float] = {}
        for i in order:
            near = pool.nearest(texts[i])
            if near.index is not None and near.score > p.threshold:
                labels[i] = kept_at[near.index]
                scores[int(i)] = near.score
            else:
                pool.add(texts[i])
                kept_at.append(int(i))
        return labels, lambda i, j: f"{scores.get(int(i), 1.0):.2f}", {}
