from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from dataflywheel.data import schema as S
from dataflywheel.evaluate.stats import bootstrap_ci
from dataflywheel.models.base import CHAT, Sampling
from dataflywheel.ops import prompts
from dataflywheel.ops.base import ModelRef
from dataflywheel.ops.evaluate.base import EvalParams, Evaluator, answers, eval_rows
from dataflywheel.ops.llm import LLMTask
from dataflywheel.ops.parsing import parse_score, parse_verdict


class JudgeParams(EvalParams):
    judge: str = ModelRef(description="the judge model")
    mode: Literal["single", "pairwise"] = Field(
        "pairwise", description="grade 1-10, or compare with the reference"
    )
    reference_guided: bool = Field(
        False, description="single mode: the judge sees the reference answer (MT-Bench's math/reasoning)"
    )
    judge_max_tokens: int = Field(2048, ge=1, description="length of the judge's reply (MT-Bench: 2048)")

    @model_validator(mode="after")
    def _reference_in_single_mode(self):
        if self.reference_guided and self.mode != "single":
            raise ValueError("reference_guided applies to mode: single (pairwise already compares with it)")
        return self


def pairwise_outcome(first: str, second: str) -> str:
    """Verdicts with the candidate as A, then as B: a win needs both orders; an inconsistent pair ties."""
    if first == "A" and second == "B":
        return "win"
    if first == "B" and second == "A":
        return "loss"
    return "tie"


class EvalJudge(LLMTask, Evaluator):
    """LLM-as-a-judge (Zheng et al., NeurIPS 2023 D&B).

    ``single``: the judge grades each answer 1-10 ("[[k]]"); with ``reference_guided`` it also sees the
    eval set's reference answer and is told to check against it (MT-Bench's grading for math, reasoning
    and code). ``pairwise``: the judge compares the candidate's answer with the reference answer in both
    orders; a win needs both orders, an inconsistent pair is a tie (position bias cancels), and
    ``win_rate`` = (wins + ties / 2) / judged pairs. The judge decodes greedily with MT-Bench's 2048-token
    budget. A pair with a reply that holds no verdict, or an answer the candidate failed to give, is not
    judged: it is excluded from every rate and counted (``unparsed_verdicts``, ``excluded``). Bootstrap
    95% CI over the judged rows.
    """

    Params: ClassVar = JudgeParams
    model_param = "judge"
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,), "judge": (CHAT,)}

    def sampling(self) -> Sampling:
        return Sampling(temperature=0.0, max_tokens=self.params.judge_max_tokens)

    def prompt(self, row: dict) -> list[list[dict]] | None:
        q, a, ref = row["question"], row["answer"], row["reference"]
        if a is None:
            return None
        if self.params.mode == "single":
            name = "judge_single_reference.txt" if self.params.reference_guided else "judge_single.txt"
            text = prompts.fill(prompts.load(__file__, name), question=q, answer=a, reference=ref)
            return [[{"role": "user", "content": text}]]
        template = prompts.load(__file__, "judge_pairwise.txt")
        return [
            [{"role": "user", "content": prompts.fill(template, question=q, answer_a=a, answer_b=ref)}],
            [{"role": "user", "content": prompts.fill(template, question=q, answer_a=ref, answer_b=a)}],
        ]

    def parse(self, reply: str, row: dict) -> dict | None:
        if self.params.mode == "single":
            grade = parse_score(reply, 1, 10)
            return None if grade is None else {"grade": grade}
        verdict = parse_verdict(reply)
        return None if verdict is None else {"verdict": verdict}

    def evaluate(self) -> dict[str, Any]:
        rows = eval_rows(self)
        got = answers(self, rows)
        items = [
            {
                "question": "\n\n".join(
                    m["content"] for m in S.prompt_of(r[S.MESSAGES]) if m["role"] == "user"
                ),
                "answer": a,
                "reference": r[S.MESSAGES][-1]["content"],
            }
            for r, a in zip(rows, got, strict=True)
        ]
        replies = self.ask(items)
        failed_answers = sum(a is None for a in got)
        unparsed = self.stats["unparsed"] + self.stats["failed"]
        if self.params.mode == "single":
            grades = [r[0].values[0]["grade"] for r in replies if r and r[0].values]
            lo, hi = bootstrap_ci(grades)
            return {
                "mean_grade": round(float(np.mean(grades)), 4) if grades else float("nan"),
                "ci95": [round(lo, 4), round(hi, 4)],
                "rows": len(rows),
                "judged": len(grades),
                "unparsed": unparsed,
                "excluded": len(rows) - len(grades),
                "failed_answers": failed_answers,
            }
        outcomes = []
        for pair in replies:
            verdicts = [r.values[0]["verdict"] if r.values else None for r in pair]
            if len(verdicts) == 2 and None not in verdicts:
                outcomes.append(pairwise_outcome(*verdicts))
        points = [{"win": 1.0, "tie": 0.5, "loss": 0.0}[o] for o in outcomes]
        lo, hi = bootstrap_ci(points)
        return {
            "win_rate": round(float(np.mean(points)), 4) if points else float("nan"),
            "ci95": [round(lo, 4), round(hi, 4)],
            "wins": outcomes.count("win"),
            "ties": outcomes.count("tie"),
            "losses": outcomes.count("loss"),
            "rows": len(rows),
            "judged": len(outcomes),
            "unparsed_verdicts": unparsed,
            "excluded": len(rows) - len(outcomes),
            "failed_answers": failed_answers,
        }
