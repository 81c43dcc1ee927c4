"""LLM-as-a-judge with the real SmolLM2 judging, constrained: single grading, reference-guided grading and
pairwise verdicts in generate mode are read from every reply, and each metric is recomputed from separate
calls to the same model under the same shape."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dataflywheel.models.base import Sampling
from dataflywheel.ops import prompts, registry
from dataflywheel.ops.evaluate import judge as judge_module
from dataflywheel.ops.evaluate.judge import pairwise_outcome
from dataflywheel.ops.parsing import bracketed_score_shape, parse_score, parse_verdict, verdict_shape
from tests.fakes import context

pytestmark = pytest.mark.slow

ROWS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Name a primary color.", "Red is a primary color."),
    ("What is 3 + 4?", "3 + 4 = 7."),
]
BUDGET = 64  # judge tokens: the free reasoning is bounded so the verdict always fits


def judge_op(tmp_path, smollm2, **params):
    (tmp_path / "eval.jsonl").write_text(
        "".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in ROWS)
    )
    ctx = context(policy=smollm2)
    ctx.base_dir = str(tmp_path)
    spec = {"model": "policy", "judge": "policy", "data": "eval.jsonl", "max_tokens": 16}
    return registry.get("eval_judge")({**spec, "judge_max_tokens": BUDGET, **params}, ctx)


def answers_of(smollm2) -> list[str]:
    convs = [[{"role": "user", "content": q}] for q, _ in ROWS]
    return [r.text for r in smollm2.chat(convs, Sampling(max_tokens=16))]


@pytest.mark.parametrize("reference_guided", [False, True])
def test_single_grading_reads_every_grade_and_equals_separate_calls(tmp_path, smollm2, reference_guided):
    op = judge_op(tmp_path, smollm2, mode="single", reference_guided=reference_guided)
    got = op.evaluate()
    assert op.stats["requests"] == len(ROWS) and got["judged"] == len(ROWS)  # every grade was read
    assert got["unparsed"] == 0 and got["excluded"] == 0

    name = "judge_single_reference.txt" if reference_guided else "judge_single.txt"
    template = prompts.load(judge_module.__file__, name)
    convs = [
        [{"role": "user", "content": prompts.fill(template, question=q, answer=a, reference=ref)}]
        for (q, ref), a in zip(ROWS, answers_of(smollm2), strict=True)
    ]
    shaped = Sampling(max_tokens=BUDGET, constraint=bracketed_score_shape(1, 10, BUDGET))
    grades = [parse_score(r.text, 1, 10) for r in smollm2.chat(convs, shaped)]
    assert None not in grades and all(g == int(g) and 1 <= g <= 10 for g in grades)
    assert got["mean_grade"] == pytest.approx(np.mean(grades), abs=1e-4)


def test_pairwise_verdicts_are_read_in_both_orders_and_equal_separate_calls(tmp_path, smollm2):
    op = judge_op(tmp_path, smollm2, mode="pairwise", verdict="generate")
    got = op.evaluate()
    assert op.stats["requests"] == 2 * len(ROWS) and got["unparsed_verdicts"] == 0
    assert got["judged"] == len(ROWS) and got["wins"] + got["ties"] + got["losses"] == len(ROWS)

    template = prompts.load(judge_module.__file__, "judge_pairwise.txt")
    shaped = Sampling(max_tokens=BUDGET, constraint=verdict_shape(BUDGET))
    outcomes = []
    for (q, ref), a in zip(ROWS, answers_of(smollm2), strict=True):
        orders = [
            prompts.fill(template, question=q, answer_a=a, answer_b=ref),
            prompts.fill(template, question=q, answer_a=ref, answer_b=a),
        ]
        replies = smollm2.chat([[{"role": "user", "content": t}] for t in orders], shaped)
        verdicts = [parse_verdict(r.text) for r in replies]
        assert None not in verdicts
        outcomes.append(pairwise_outcome(*verdicts))
    assert [got["wins"], got["ties"], got["losses"]] == [outcomes.count(k) for k in ("win", "tie", "loss")]
    points = [{"win": 1.0, "tie": 0.5, "loss": 0.0}[o] for o in outcomes]
    assert got["win_rate"] == pytest.approx(np.mean(points), abs=1e-4)


def test_unconstrained_the_same_judge_leaves_verdicts_unread(tmp_path, smollm2):
    """The contrast that motivates the shape: off, SmolLM2's pairwise replies mostly hold no verdict."""
    op = judge_op(tmp_path, smollm2, mode="pairwise", verdict="generate", constrained="off")
    got = op.evaluate()
    assert got["unparsed_verdicts"] >= 1 and got["judged"] < len(ROWS)
