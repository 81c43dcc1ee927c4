from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.ops.base import OpParams, Selection, Selector


def fleiss_kappa(votes: np.ndarray) -> float:
    """Fleiss' kappa for (items, raters) binary votes: agreement beyond chance among several raters."""
    n_items, n_raters = votes.shape
    if n_items == 0 or n_raters < 2:
        return float("nan")
    yes = votes.sum(axis=1)
    counts = np.stack([n_raters - yes, yes], axis=1).astype(float)  # (items, categories)
    p_item = ((counts**2).sum(axis=1) - n_raters) / (n_raters * (n_raters - 1))
    p_bar = p_item.mean()
    p_cat = counts.sum(axis=0) / (n_items * n_raters)
    p_e = (p_cat**2).sum()
    return float((p_bar - p_e) / (1 - p_e)) if p_e < 1 else 1.0


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two binary raters."""
    p_o = float((a == b).mean())
    p_e = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return (p_o - p_e) / (1 - p_e) if p_e < 1 else 1.0


class PanelVote(Selector):
    """Multi-judge selection: several judges' score columns (different models and/or prompts, e.g. from
    ``alpagasus`` steps with different ``name``s) vote; keep by majority of ``score >= threshold`` votes
    or by the mean score. The step's manifest entry reports agreement: Fleiss' kappa over all judges and
    Cohen's kappa for each pair. A judge with no score on a row abstains."""

    class Params(OpParams):
        columns: list[str] = Field(min_length=2, description="one score column per judge")
        threshold: float = Field(4.5, description="a judge votes to keep when its score is >= threshold")
        rule: Literal["majority", "mean", "unanimous"] = Field("majority", description="how votes decide")

    def input_columns(self) -> list[str]:
        return list(self.params.columns)

    def output_columns(self) -> list[str]:
        return ["score_panel_mean", "score_panel_votes"]

    def select(self, table: pa.Table) -> Selection:
        p = self.params
        scores = np.stack(
            [np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float64) for c in p.columns],
            axis=1,
        )
        present = ~np.isnan(scores)
        votes = (np.nan_to_num(scores, nan=-np.inf) >= p.threshold) & present
        voters = present.sum(axis=1)
        yes = votes.sum(axis=1)
        with np.errstate(invalid="ignore"):
            mean = np.where(voters > 0, np.nansum(scores, axis=1) / np.maximum(voters, 1), np.nan)
        if p.rule == "majority":
            keep = (voters > 0) & (yes * 2 > voters)
        elif p.rule == "unanimous":
            keep = (voters > 0) & (yes == voters)
        else:
            keep = mean >= p.threshold
        full = present.all(axis=1)
        pairs = {
            f"{a} ~ {b}": round(cohen_kappa(votes[full, i], votes[full, j]), 4)
            for i, a in enumerate(p.columns)
            for j, b in enumerate(p.columns)
            if i < j and full.any()
        }
        stats = {
            "fleiss_kappa": round(fleiss_kappa(votes[full].astype(int)), 4),
            "cohen_kappa": pairs,
            "rows_rated_by_all": int(full.sum()),
            "kept": int(keep.sum()),
        }
        return Selection(
            np.flatnonzero(keep),
            reason=f"panel voted against ({p.rule}, threshold {p.threshold})",
            columns={"score_panel_mean": pa.array(mean), "score_panel_votes": pa.array(yes.astype(float))},
            stats=stats,
        )
