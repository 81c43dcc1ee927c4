from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.ops.base import BudgetParams, Selection, Selector


class GroupSelect(Selector):
    """Select whole groups (tasks, sources, clusters) by an aggregate of a score: e.g. the tasks with the
    highest mean prompt uncertainty (Active Instruction Tuning picks tasks, not examples). Kept rows get
    ``score_group_<score>``, their group's aggregate."""

    class Params(BudgetParams):
        by: str = Field(description="group column, e.g. tag_task")
        score: str = Field(description="score column to aggregate")
        aggregate: Literal["mean", "max", "min", "median"] = Field("mean", description="per-group aggregate")
        descending: bool = Field(True, description="keep the highest aggregates")

    def input_columns(self) -> list[str]:
        return [self.params.by, self.params.score]

    def output_columns(self) -> list[str]:
        return [f"score_group_{self.params.score.removeprefix('score_')}"]

    def select(self, table: pa.Table) -> Selection:
        p = self.params
        groups = np.asarray(table.column(p.by).to_pylist(), dtype=object)
        values = np.asarray(table.column(p.score).to_numpy(zero_copy_only=False), dtype=np.float64)
        names = sorted({g for g in groups if g is not None}, key=str)
        fn = {"mean": np.nanmean, "max": np.nanmax, "min": np.nanmin, "median": np.nanmedian}[p.aggregate]
        agg = {}
        for g in names:
            v = values[groups == g]
            agg[g] = float(fn(v)) if np.isfinite(v).any() else float("nan")
        ranked = sorted(
            (g for g in names if not np.isnan(agg[g])), key=lambda g: agg[g], reverse=p.descending
        )
        if p.tokens is not None:  # whole groups in rank order, while their rows' tokens fit
            costs = self.token_costs(table)
            group_cost = {g: int(costs[groups == g].sum()) for g in ranked}
            spent, k = 0, 0
            while k < len(ranked) and spent + group_cost[ranked[k]] <= p.tokens:
                spent += group_cost[ranked[k]]
                k += 1
        else:
            k = max(1, p.budget(len(ranked))) if ranked else 0
        chosen = set(ranked[:k])
        keep = np.flatnonzero([g in chosen for g in groups])
        col = pa.array([agg.get(g, float("nan")) if g is not None else None for g in groups], pa.float64())
        return Selection(
            keep,
            reason=f"group not among the top {k} by {p.aggregate} {p.score}",
            columns={self.output_columns()[0]: col},
            stats={"groups": len(names), "kept_groups": sorted(map(str, chosen))[:50]},
        )
