from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import LOGPROBS
from dataflywheel.ops import prompts
from dataflywheel.ops.base import ModelRef, OpParams, Scorer

OPTIONS = tuple(str(k) for k in range(1, 7))


def expected_score(logprobs: list[float]) -> float:
    """Sum of k * p_k over the scores 1..6, the probabilities renormalised over those six tokens."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if not np.isfinite(lp).any():
        return 3.0  # DEITA's fallback when the score tokens are missing
    p = np.exp(lp - lp.max())
    return float(np.dot(p / p.sum(), np.arange(1, 7)))


class DeitaScorer(Scorer):
    """DEITA's complexity and quality scores (Liu et al., ICLR 2024).

    A scorer model reads each turn's instruction (complexity) and instruction + response (quality) and
    the score is the expected value of "1".."6" under its next-token distribution (DEITA's inference
    trick; the prompts here are written for this project, so any chat model can score). Multi-turn
    conversations score every turn; ``score_deita`` is the evol score sum_t complexity_t x quality_t,
    ``score_deita_complexity`` and ``score_deita_quality`` the turn means. DEITA's selection is then
    ``diverse_filter: {order_by: score_deita, tau: 0.9}`` over an ``embed`` column (last-token hidden
    states of an LLM, as in the paper).
    """

    class Params(OpParams):
        model: str = ModelRef()
        max_chars: int = Field(4000, ge=100, description="cut each instruction and response to this length")

    reads = (S.MESSAGES,)
    writes = ("score_deita", "score_deita_complexity", "score_deita_quality")
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (LOGPROBS,)}
    batch_rows = 32

    def score(self, batch: pa.Table) -> dict:
        cap = self.params.max_chars
        comp_t = prompts.load(__file__, "deita_complexity.txt")
        qual_t = prompts.load(__file__, "deita_quality.txt")
        turns, asks = [], []  # (row) per turn; two prompts per turn
        for r, conv in enumerate(batch.column(S.MESSAGES).to_pylist()):
            last_user = None
            for m in conv:
                if m["role"] == "user":
                    last_user = m["content"][:cap]
                elif m["role"] == "assistant" and last_user is not None:
                    turns.append(r)
                    asks.append([{"role": "user", "content": prompts.fill(comp_t, instruction=last_user)}])
                    asks.append(
                        [
                            {
                                "role": "user",
                                "content": prompts.fill(
                                    qual_t, instruction=last_user, response=m["content"][:cap]
                                ),
                            }
                        ]
                    )
        lps = self.ctx.model(self.params.model).option_logprobs(asks, list(OPTIONS))
        per_row: dict[int, list[tuple[float, float]]] = {}
        for k, r in enumerate(turns):
            per_row.setdefault(r, []).append((expected_score(lps[2 * k]), expected_score(lps[2 * k + 1])))
        out = {name: [] for name in self.writes}
        for r in range(batch.num_rows):
            t = per_row.get(r)
            out["score_deita"].append(sum(c * q for c, q in t) if t else None)
            out["score_deita_complexity"].append(float(np.mean([c for c, _ in t])) if t else None)
            out["score_deita_quality"].append(float(np.mean([q for _, q in t])) if t else None)
        return out
