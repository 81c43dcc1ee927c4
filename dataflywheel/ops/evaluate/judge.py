from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.evaluate.stats import bootstrap_ci
from dataflywheel.models.base import CHAT, Sampling
from dataflywheel.ops import prompts
from dataflywheel.ops.base import ModelRef
from dataflywheel.ops.evaluate.base import EvalParams, Evaluator, answers, eval_rows
from dataflywheel.ops.parsing import parse_score, parse_verdict


class JudgeParams(EvalParams):
    judge: str = ModelRef(description="the judge model")
    mode: Literal["single", "pairwise"] = Field(
        "pairwise", description="grade 1-10, or compare with the reference"
    )
    judge_max_tokens: int = Field(256, ge=1, description="length of the judge's reply")


def pairwise_outcome(first: str | None, second: str | None) -> str:
    """Verdicts with the candidate as A, then as B: a win needs both orders; an inconsistent pair ties."""
    if first == "A" and second == "B":
        return "win"
    if first == "B" and second == "A":
        return "loss"
    return "tie"


class EvalJudge(Evaluator):
    """LLM-as-a-judge (Zheng et al., NeurIPS 2023 D&B). ``single``: the judge grades each answer 1-10
    ("[[k]]"); ``pairwise``: the judge compares the candidate's answer with the eval set's reference
    answer in both orders (position bias cancels; an inconsistent pair is a tie) and the win rate counts
    a tie as half. Bootstrap 95% CI; replies without a verdict are counted, never guessed."""

    Params: ClassVar = JudgeParams
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,), "judge": (CHAT,)}

    def evaluate(self) -> dict[str, Any]:
        p = self.params
        rows = eval_rows(self)
        got = answers(self, rows)
        questions = [
            "\n\n".join(m["content"] for m in S.prompt_of(r[S.MESSAGES]) if m["role"] == "user") for r in rows
        ]
        judge = self.ctx.model(p.judge)
        sampling = Sampling(max_tokens=p.judge_max_tokens)
        if p.mode == "single":
            template = prompts.load(__file__, "judge_single.txt")
            asks = [
                [{"role": "user", "content": prompts.fill(template, question=q, answer=a or "")}]
                for q, a in zip(questions, got, strict=True)
            ]
            grades = [parse_score(r.text, 1, 10) for r in judge.chat(asks, sampling)]
            valid = [g for g in grades if g is not None]
            lo, hi = bootstrap_ci(valid)
            return {
                "mean_grade": round(float(np.mean(valid)), 4) if valid else float("nan"),
                "ci95": [round(lo, 4), round(hi, 4)],
                "rows": len(rows),
                "unparsed": len(grades) - len(valid),
            }
        template = prompts.load(__file__, "judge_pairwise.txt")
        refs = [r[S.MESSAGES][-1]["content"] for r in rows]
        asks = []
        for q, a, ref in zip(questions, got, refs, strict=True):
            asks.append(
                [
                    {
                        "role": "user",
                        "content": prompts.fill(template, question=q, answer_a=a or "", answer_b=ref),
                    }
                ]
            )
            asks.append(
                [
                    {
                        "role": "user",
                        "content": prompts.fill(template, question=q, answer_a=ref, answer_b=a or ""),
                    }
                ]
            )
        verdicts = [parse_verdict(r.text) for r in judge.chat(asks, sampling)]
        outcomes = [pairwise_outcome(verdicts[2 * i], verdicts[2 * i + 1]) for i in range(len(rows))]
        points = [{"win": 1.0, "tie": 0.5, "loss": 0.0}[o] for o in outcomes]
        lo, hi = bootstrap_ci(points)
        return {
            "win_rate": round(float(np.mean(points)), 4) if points else float("nan"),
            "ci95": [round(lo, 4), round(hi, 4)],
            "wins": outcomes.count("win"),
            "ties": outcomes.count("tie"),
            "losses": outcomes.count("loss"),
            "unparsed_verdicts": sum(v is None for v in verdicts),
            "rows": len(rows),
        }
