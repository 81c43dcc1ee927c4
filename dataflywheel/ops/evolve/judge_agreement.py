"""How well a model judges: its additive 5-point scores of two answers against a reference judge's
preference between them (GPT-4's on AlpacaEval's annotations), as Self-Rewarding tracks its judge
(Yuan et al., 2024, section 3: the model's judging agreement with human rankings across iterations).

    - judge_agreement: {model: policy, data: alpaca_eval/annotations_alpaca_eval_gpt4/alpaca-7b.json,
                        limit: 100}

Each pair's two answers are scored separately with ``self_reward``'s judge prompt (so the order they
come in cannot bias the judge), each ``judgements`` times, averaged; the model agrees when the answer
the reference preferred scored higher. Rows of the eval set without a preference (AlpacaEval's ties)
are left out and counted; a pair whose scores tie, or with an answer no judgement could score, is not
decided and is counted, never read as agreement or disagreement.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.evaluate.stats import bootstrap_ci
from dataflywheel.models.base import CHAT, LOGPROBS, Sampling
from dataflywheel.ops.evaluate.base import EvalParams, Evaluator
from dataflywheel.ops.evolve.self_reward import judge_responses
from dataflywheel.ops.llm import LLMTask


class AgreementParams(EvalParams):
    data: str = Field(description="preference pairs with a reference judge's choice (AlpacaEval annotations)")
    judgements: int = Field(3, ge=1, description="judgements averaged per answer (generate mode)")
    temperature: float = Field(0.7, ge=0, description="judge sampling temperature (generate mode)")
    judge_max_tokens: int = Field(160, ge=1, description="tokens per judgement at most")
    judge_mode: Literal["generate", "expected"] = Field(
        "generate", description='read "Score: k" from sampled judgements, or the expected score'
    )
    seed: int | None = Field(None, description="sampling seed; the recipe's seed when unset")


class JudgeAgreement(LLMTask, Evaluator):
    """The model as a judge against a reference judge's preferences: share of decided pairs where it
    scores the preferred answer higher, with ties, unscored pairs and unparsed judgements counted."""

    Params: ClassVar = AgreementParams

    def model_needs(self) -> dict[str, tuple[str, ...]]:
        return {"model": (CHAT, LOGPROBS) if self.params.judge_mode == "expected" else (CHAT,)}

    def sampling(self) -> Sampling:
        p = self.params
        seed = p.seed if p.seed is not None else self.ctx.seed
        return Sampling(temperature=p.temperature, max_tokens=p.judge_max_tokens, seed=seed)

    def evaluate(self) -> dict[str, Any]:
        p = self.params
        read = io.read_all(self.ctx.path(p.data), on_error="skip")
        pairs = [r for r in read.rows if r.get(S.CHOSEN) and r.get(S.REJECTED)]
        left_out = len(read.dropped) + len(read.rows) - len(pairs)
        rows = pairs[: p.limit] if p.limit else pairs
        items = []
        for r in rows:
            question = S.prompt_text(r[S.PROMPT])
            items += [(question, r[S.CHOSEN][-1]["content"]), (question, r[S.REJECTED][-1]["content"])]
        scores = judge_responses(self, items, p.judge_mode, p.judgements, p.judge_max_tokens)
        agree = disagree = ties = unscored = 0
        points = []
        for k in range(len(rows)):
            chosen, rejected = scores[2 * k], scores[2 * k + 1]
            if chosen is None or rejected is None:
                unscored += 1
            elif chosen == rejected:
                ties += 1
            else:
                agree += chosen > rejected
                disagree += chosen < rejected
                points.append(float(chosen > rejected))
        decided = agree + disagree
        lo, hi = bootstrap_ci(points)
        return {
            "agreement": round(agree / decided, 4) if decided else float("nan"),
            "ci95": [round(lo, 4), round(hi, 4)],
            "pairs": len(rows),
            "decided": decided,
            "ties": ties,
            "unscored": unscored,
            "unparsed_judgements": self.stats["unparsed"],
            "failed_requests": self.stats["failed"],
            "left_out_rows": left_out,  # no preference between the two (ties), or not a pair
        }
