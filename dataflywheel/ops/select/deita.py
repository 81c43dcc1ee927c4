from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import LOGPROBS
from dataflywheel.ops import prompts
from dataflywheel.ops.llm import LLMParams, LLMScorer
from dataflywheel.ops.parsing import expected_score

OPTIONS = [str(k) for k in range(1, 7)]
SCORES = range(1, 7)


class DeitaScorer(LLMScorer):
    """DEITA's complexity and quality scores (Liu et al., ICLR 2024).

    A scorer model reads each turn's instruction (complexity) and instruction + response (quality) and
    the score is the expected value of "1".."6" under its next-token distribution (DEITA's inference
    trick; the prompts here are written for this project, so any chat model can score). Multi-turn
    conversations score every turn; ``score_deita`` is the evol score sum_t complexity_t x quality_t,
    ``score_deita_complexity`` and ``score_deita_quality`` the turn means. A turn whose score tokens
    all have zero probability leaves the row's scores null (counted as unparsed; DEITA's code would put
    3.0 there). DEITA's selection is then ``diverse_filter: {order_by: score_deita, tau: 0.9}`` over an
    ``embed`` column (last-token hidden states of an LLM, as in the paper).
    """

    class Params(LLMParams):
        max_chars: int = Field(4000, ge=100, description="cut each instruction and response to this length")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (LOGPROBS,)}
    keep_raw = False
    columns = ("score_deita", "score_deita_complexity", "score_deita_quality")

    def value_columns(self) -> dict[str, pa.DataType]:
        return dict.fromkeys(self.columns, pa.float64())

    def prompt(self, row: dict) -> list[list[dict]]:
        """Two asks per answered turn: the instruction's complexity, then the pair's quality."""
        cap = self.params.max_chars
        comp_t = prompts.load(__file__, "deita_complexity.txt")
        qual_t = prompts.load(__file__, "deita_quality.txt")
        asks, last_user = [], None
        for m in row[S.MESSAGES]:
            if m["role"] == "user":
                last_user = m["content"][:cap]
            elif m["role"] == "assistant" and last_user is not None:
                response = m["content"][:cap]
                asks.append([{"role": "user", "content": prompts.fill(comp_t, instruction=last_user)}])
                quality = prompts.fill(qual_t, instruction=last_user, response=response)
                asks.append([{"role": "user", "content": quality}])
        return asks

    def score(self, batch: pa.Table) -> dict:
        rows = batch.to_pylist()
        out: dict[str, list] = {c: [] for c in self.columns}
        errors = []
        for lps in self.ask_options(rows, OPTIONS):
            values = [expected_score(x, SCORES) for x in lps]
            turns = list(zip(values[0::2], values[1::2], strict=True))
            ok = bool(turns) and None not in values
            self.stats["unparsed"] += bool(turns) and not ok
            out["score_deita"].append(sum(c * q for c, q in turns) if ok else None)
            out["score_deita_complexity"].append(float(np.mean([c for c, _ in turns])) if ok else None)
            out["score_deita_quality"].append(float(np.mean([q for _, q in turns])) if ok else None)
            errors.append(
                None
                if ok
                else "no answered turn"
                if not turns
                else "a turn's score tokens have no finite log-probability"
            )
        cols = {c: pa.array(v, pa.float64()) for c, v in out.items()}
        cols["error_deita"] = pa.array(errors, pa.string())
        return cols
