from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from dataflywheel.data import schema as S
from dataflywheel.evaluate.stats import bootstrap_ci
from dataflywheel.models.base import CHAT, LOGPROBS, Sampling
from dataflywheel.models.constraint import Constraint
from dataflywheel.ops import prompts
from dataflywheel.ops.base import ModelRef
from dataflywheel.ops.evaluate.base import EvalParams, Evaluator, answers, eval_rows
from dataflywheel.ops.llm import Constrained, ConstrainedField, LLMTask
from dataflywheel.ops.parsing import bracketed_score_shape, parse_score, parse_verdict, verdict_shape


class JudgeParams(EvalParams):
    judge: str = ModelRef(description="the judge model")
    mode: Literal["single", "pairwise"] = Field(
        "pairwise", description="grade 1-10, or compare with the reference"
    )
    reference_guided: bool = Field(
        False, description="single mode: the judge sees the reference answer (MT-Bench's math/reasoning)"
    )
    judge_max_tokens: int = Field(2048, ge=1, description="length of the judge's reply (MT-Bench: 2048)")
    against: str | None = ModelRef(
        "pairwise: the model whose answers the candidate's are compared with instead of the eval set's "
        "references (in a loop, policy@previous: the checkpoint the round started from)",
        default=None,
    )
    constrained: Constrained = ConstrainedField()
    verdict: Literal["generate", "logprobs"] = Field(
        "generate",
        description='pairwise: read "[[A]]"/"[[B]]" from a generated reply, or the likelier of the letters '
        "A and B as the judge's next token (small judges)",
    )

    @model_validator(mode="after")
    def _pairwise_options(self):
        if self.reference_guided and self.mode != "single":
            raise ValueError("reference_guided applies to mode: single (pairwise already compares with it)")
        if self.mode == "single" and (self.against is not None or self.verdict != "generate"):
            raise ValueError("against and verdict: logprobs apply to mode: pairwise")
        return self


def pairwise_outcome(first: str, second: str) -> str:
    """Verdicts with the candidate as A, then as B: a win needs both orders; an inconsistent pair ties."""
    if first == "A" and second == "B":
        return "win"
    if first == "B" and second == "A":
        return "loss"
    return "tie"


LETTERS = ["A", "B"]


class EvalJudge(LLMTask, Evaluator):
    """LLM-as-a-judge (Zheng et al., NeurIPS 2023 D&B).

    ``single``: the judge grades each answer 1-10 ("[[k]]"); with ``reference_guided`` it also sees the
    eval set's reference answer and is told to check against it (MT-Bench's grading for math, reasoning
    and code). ``pairwise``: the judge compares the candidate's answer with the reference answer, or with
    the answer of the model ``against`` (a flywheel round against the one before it: ``against:
    policy@previous``), in both orders; a win needs both orders, an inconsistent pair is a tie (position
    bias cancels), and ``win_rate`` = (wins + ties / 2) / judged pairs. The judge decodes greedily with
    MT-Bench's 2048-token budget; ``verdict: logprobs`` instead takes the likelier of the letters A and B
    as the judge's next token (a judge too small to write a verdict still has a preference), and also
    reports ``preference``: the judge's probability for the candidate averaged over both orders (0.5 =
    no preference). A pair with a reply that holds no verdict, or an answer either side failed to give,
    is not judged: it is excluded from every rate and counted (``unparsed_verdicts``, ``excluded``).
    Bootstrap 95% CI over the judged rows.
    """

    Params: ClassVar = JudgeParams
    model_param = "judge"

    def model_needs(self) -> dict[str, tuple[str, ...]]:
        judge = (CHAT, LOGPROBS) if self.params.verdict == "logprobs" else (CHAT,)
        return {"model": (CHAT,), "against": (CHAT,), "judge": judge}

    def shape(self) -> Constraint | None:
        """Free reasoning closed by ``[[k]]`` (single) or ``[[A]]``/``[[B]]``/``[[C]]`` (pairwise)."""
        if self.params.mode == "single":
            return bracketed_score_shape(1, 10, self.params.judge_max_tokens)
        return verdict_shape(self.params.judge_max_tokens)

    def sampling(self) -> Sampling:
        return self.shaped(Sampling(temperature=0.0, max_tokens=self.params.judge_max_tokens), self.shape())

    def prompt(self, row: dict) -> list[list[dict]] | None:
        q, a, ref = row["question"], row["answer"], row["reference"]
        if a is None or ref is None:
            return None
        if self.params.mode == "single":
            name = "judge_single_reference.txt" if self.params.reference_guided else "judge_single.txt"
            text = prompts.fill(prompts.load(__file__, name), question=q, answer=a, reference=ref)
            return [[{"role": "user", "content": text}]]
        name = "judge_pairwise_letter.txt" if self.params.verdict == "logprobs" else "judge_pairwise.txt"
        template = prompts.load(__file__, name)
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
        p = self.params
        rows = eval_rows(self)
        got = answers(self, rows)
        others = answers(self, rows, p.against) if p.against else [r[S.MESSAGES][-1]["content"] for r in rows]
        items = [
            {
                "question": "\n\n".join(
                    m["content"] for m in S.prompt_of(r[S.MESSAGES]) if m["role"] == "user"
                ),
                "answer": a,
                "reference": other,
            }
            for r, a, other in zip(rows, got, others, strict=True)
        ]
        failed = {"failed_answers": sum(a is None for a in got)}
        if p.against:
            failed["failed_against_answers"] = sum(a is None for a in others)
        if p.mode == "single":
            return self._single(rows, self.ask(items), failed)
        if p.verdict == "logprobs":
            return self._pairwise_logprobs(rows, items, failed)
        outcomes = []
        for pair in self.ask(items):
            verdicts = [r.values[0]["verdict"] if r.values else None for r in pair]
            if len(verdicts) == 2 and None not in verdicts:
                outcomes.append(pairwise_outcome(*verdicts))
        failed["failed_verdicts"] = self.stats["failed"]  # a judge call that failed is not an unparsed reply
        return self._rates(rows, outcomes, failed, unparsed=self.stats["unparsed"])

    def _single(self, rows: list[dict], replies: list, failed: dict) -> dict[str, Any]:
        grades = [r[0].values[0]["grade"] for r in replies if r and r[0].values]
        lo, hi = bootstrap_ci(grades)
        return {
            "mean_grade": round(float(np.mean(grades)), 4) if grades else float("nan"),
            "ci95": [round(lo, 4), round(hi, 4)],
            "rows": len(rows),
            "judged": len(grades),
            "unparsed": self.stats["unparsed"],
            "failed_grades": self.stats["failed"],
            "excluded": len(rows) - len(grades),
            **failed,
        }

    def _pairwise_logprobs(self, rows: list[dict], items: list[dict], failed: dict) -> dict[str, Any]:
        """Each order's verdict is the likelier letter; ``preference`` is the probability of the
        candidate's letter (normalised over A and B) averaged over the two orders."""
        asked = self.ask_options(items, LETTERS)
        outcomes, preference = [], []
        for pair in asked:
            if len(pair) != 2:
                continue
            p_first = _letter_probability(pair[0], "A")  # the candidate is A
            p_second = _letter_probability(pair[1], "B")  # the candidate is B
            if p_first is None or p_second is None:  # the judge put no mass on either letter
                continue
            verdicts = ["A" if p_first > 0.5 else "B", "B" if p_second > 0.5 else "A"]
            outcomes.append(pairwise_outcome(*verdicts))
            preference.append((p_first + p_second) / 2)
        unparsed = sum(len(pair) == 2 for pair in asked) - len(outcomes)
        out = self._rates(rows, outcomes, failed, unparsed=unparsed)
        out["preference"] = round(float(np.mean(preference)), 4) if preference else float("nan")
        return out

    def _rates(self, rows: list[dict], outcomes: list[str], failed: dict, unparsed: int) -> dict[str, Any]:
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
            **failed,
        }


def _letter_probability(logprobs: list[float], letter: str) -> float | None:
    """P(letter) normalised over the letters A and B, or None when neither has any mass."""
    mass = [math.exp(lp) for lp in logprobs]
    total = sum(mass)
    if not total or not math.isfinite(total):
        return None
    return mass[LETTERS.index(letter)] / total
