from __future__ import annotations

import math
from typing import Any, ClassVar

from dataflywheel.data import schema as S
from dataflywheel.models.base import LOGPROBS
from dataflywheel.ops.evaluate.base import EvalParams, Evaluator, eval_rows


class EvalNLL(Evaluator):
    """Held-out response loss: the mean negative log-likelihood per response token of the eval set's
    reference answers (final assistant turns) given their prompts, and its perplexity exp(NLL).
    Token-weighted over the whole set, as a trainer's eval loss is."""

    Params: ClassVar = EvalParams
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (LOGPROBS,)}

    def evaluate(self) -> dict[str, Any]:
        rows = [r for r in eval_rows(self) if S.last_turn(r[S.MESSAGES][-1:], "assistant")]
        convs = [S.prompt_of(r[S.MESSAGES]) for r in rows]
        refs = [r[S.MESSAGES][-1]["content"] for r in rows]
        scored = self.ctx.model(self.params.model).logprobs(convs, refs)
        lps = [lp for s in scored if s.logprobs for lp in s.logprobs]
        nll = -sum(lps) / len(lps) if lps else float("nan")
        return {
            "nll": round(nll, 5),
            "perplexity": round(math.exp(nll), 4) if lps else float("nan"),
            "tokens": len(lps),
            "rows": len(rows),
            "failed": sum(s.logprobs is None for s in scored),
        }
