from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.evaluate.stats import bootstrap_ci
from dataflywheel.evaluate.tasks import choice_letter, gsm8k_answer, gsm8k_correct
from dataflywheel.models.base import CHAT
from dataflywheel.ops.evaluate.base import EvalParams, Evaluator, answers, eval_rows


class AccuracyParams(EvalParams):
    task: Literal["gsm8k", "multiple_choice", "auto"] = Field(
        description='how answers are checked; auto: per row, GSM8K when the reference ends in "#### n", '
        "else the choice letter (an evolved set mixes both)"
    )
    by: str | None = Field(
        None, description="also report accuracy per value of this column (evolve_op: original vs evolved)"
    )
    answer_field: str | None = Field(
        None,
        description="multiple_choice: column with the correct letter "
        "(default: the reference answer's letter)",
    )


class EvalAccuracy(Evaluator):
    """Verifiable task accuracy of greedy answers: GSM8K final-number match against the reference
    solution ("#### N"), or the multiple-choice letter against ``answer_field``. With a bootstrap 95% CI.
    ``by: evolve_op`` adds ``accuracy:<value>`` and ``rows:<value>`` per group (rows without a value are
    ``original``): a model's accuracy on the seeds against each evolved kind, in one pass."""

    Params: ClassVar = AccuracyParams
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}

    def evaluate(self) -> dict[str, Any]:
        rows = eval_rows(self)
        got = answers(self, rows)
        hits = []
        for r, a in zip(rows, got, strict=True):
            ref = r[S.MESSAGES][-1]["content"]
            task = self.params.task
            if task == "auto":
                task = "gsm8k" if gsm8k_answer(ref) is not None and "####" in ref else "multiple_choice"
            if task == "gsm8k":
                hits.append(float(gsm8k_correct(a, ref)))
            else:
                want = (
                    str(r[self.params.answer_field]).strip().upper()
                    if self.params.answer_field
                    else choice_letter(ref)
                )
                hits.append(float(choice_letter(a) == want))
        lo, hi = bootstrap_ci(hits)
        acc = sum(hits) / len(hits) if hits else float("nan")
        out = {
            "accuracy": round(acc, 4),
            "ci95": [round(lo, 4), round(hi, 4)],
            "rows": len(rows),
            "failed": sum(a is None for a in got),
        }
        if self.params.by:
            groups: dict[str, list[float]] = {}
            for r, hit in zip(rows, hits, strict=True):
                groups.setdefault(str(r.get(self.params.by) or "original"), []).append(hit)
            for name, group in sorted(groups.items()):
                out[f"accuracy:{name}"] = round(sum(group) / len(group), 4)
                out[f"rows:{name}"] = len(group)
        return out
