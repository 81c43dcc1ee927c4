"""Evaluators: order swapping and win rates with a scripted judge; NLL, accuracy and judging on SmolLM2."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch

from dataflywheel.data import io
from dataflywheel.engine.local import LocalExecutor
from dataflywheel.engine.runinfo import load_manifest
from dataflywheel.models.client import Model
from dataflywheel.ops import registry
from dataflywheel.ops.base import OpContext
from dataflywheel.ops.evaluate.judge import pairwise_outcome
from dataflywheel.recipe.models import ModelSpec
from dataflywheel.recipe.validate import validate_file
from tests.fakes import ScriptedBackend, context


@pytest.mark.parametrize(
    ("first", "second", "want"),
    [
        ("A", "B", "win"),
        ("B", "A", "loss"),
        ("A", "A", "tie"),
        ("B", "B", "tie"),
        ("C", "B", "tie"),
    ],
)
def test_pairwise_outcome_needs_both_orders(first, second, want):
    assert pairwise_outcome(first, second) == want


def candidate_says_good(conv):
    return "GOOD " + conv[-1]["content"]


def prefers_good(conv):
    """A fair judge: whichever answer says GOOD wins."""
    text = conv[-1]["content"]
    a = text.split("Answer A:")[1].split("Answer B:")[0]
    return "Because. [[A]]" if "GOOD" in a else "Because. [[B]]"


def judge_op(tmp_path, judge_reply, candidate=candidate_says_good, **params):
    rows = [{"instruction": f"q{i}", "output": f"reference {i}"} for i in range(6)]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge = ScriptedBackend(default=judge_reply)
    ctx = context(cand=ScriptedBackend(default=candidate), judge=judge)
    ctx.base_dir = str(tmp_path)
    op = registry.get("eval_judge")({"model": "cand", "judge": "judge", "data": "eval.jsonl", **params}, ctx)
    return op, judge


def test_win_rate_and_position_bias(tmp_path):
    fair = judge_op(tmp_path, prefers_good)[0].evaluate()
    assert fair["win_rate"] == 1.0 and fair["wins"] == 6 and fair["unparsed_verdicts"] == 0
    biased = judge_op(tmp_path, "[[A]]")[0].evaluate()  # always "A": inconsistent, so every pair ties
    assert biased["win_rate"] == 0.5 and biased["ties"] == 6 and biased["judged"] == 6


def test_a_missing_verdict_is_excluded_and_counted_never_a_tie(tmp_path):
    def fair_but_silent_on_q0_q1(conv):
        text = conv[-1]["content"]
        return (
            "I cannot decide."
            if "q0" in text or ("q1" in text and "Answer A:\nreference" in text)
            else prefers_good(conv)
        )

    got = judge_op(tmp_path, fair_but_silent_on_q0_q1)[0].evaluate()
    # q0: both orders unparsed; q1: one order unparsed -> both pairs excluded, the other four are wins
    assert got["unparsed_verdicts"] == 3 and got["judged"] == 4 and got["excluded"] == 2
    assert got["wins"] == 4 and got["ties"] == 0 and got["win_rate"] == 1.0


def test_failed_candidate_answers_are_excluded(tmp_path):
    got = judge_op(tmp_path, prefers_good, candidate=lambda c: None if "q5" in c[-1]["content"] else "GOOD")[
        0
    ].evaluate()
    assert got["failed_answers"] == 1 and got["judged"] == 5 and got["wins"] == 5


def against_op(tmp_path, judge: ScriptedBackend, against=lambda c: "BAD " + c[-1]["content"], **params):
    rows = [{"instruction": f"q{i}", "output": f"reference {i}"} for i in range(6)]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ctx = context(
        cand=ScriptedBackend(default=candidate_says_good), old=ScriptedBackend(default=against), judge=judge
    )
    ctx.base_dir = str(tmp_path)
    params = {"model": "cand", "judge": "judge", "data": "eval.jsonl", "against": "old", **params}
    return registry.get("eval_judge")(params, ctx)


def test_pairwise_against_another_models_answers(tmp_path):
    judge = ScriptedBackend(default=prefers_good)
    got = against_op(tmp_path, judge).evaluate()
    assert got["wins"] == 6 and got["win_rate"] == 1.0 and got["failed_against_answers"] == 0
    # the references never reach the judge: the other model's answers stand in for them
    assert judge.calls and not any("reference" in c[-1]["content"] for c in judge.calls)
    assert all("BAD q" in c[-1]["content"] for c in judge.calls)
    # an answer the other model failed to give leaves its row unjudged, and counted
    silent_on_q2 = lambda c: None if "q2" in c[-1]["content"] else "x"  # noqa: E731
    got = against_op(tmp_path, ScriptedBackend(default=prefers_good), against=silent_on_q2).evaluate()
    assert got["failed_against_answers"] == 1 and got["judged"] == 5 and got["excluded"] == 1


def letter_judge(p_good: float, biased: float | None = None):
    """Next-token log-probabilities over A and B: the GOOD answer's letter gets ``p_good``, or letter A
    always gets ``biased`` (a judge with position bias only)."""

    def options(conv, letters):
        assert letters == ["A", "B"]
        text = conv[-1]["content"]
        assert text.rstrip().endswith("Reply with the single letter A or B.")
        if biased is not None:
            p_a = biased
        else:
            a = text.split("Answer A:")[1].split("Answer B:")[0]
            p_a = p_good if "GOOD" in a else 1 - p_good
        return [math.log(p_a), math.log(1 - p_a)]

    return ScriptedBackend(option_logprobs=options)


def test_letter_verdicts_from_the_judges_next_token(tmp_path):
    got = against_op(tmp_path, letter_judge(0.7), verdict="logprobs").evaluate()
    assert got["wins"] == 6 and got["win_rate"] == 1.0 and got["preference"] == pytest.approx(0.7)
    assert got["unparsed_verdicts"] == 0 and got["judged"] == 6
    # a judge that always says A: every pair is inconsistent (a tie), and its preference is 0.5
    got = against_op(tmp_path, letter_judge(0, biased=0.9), verdict="logprobs").evaluate()
    assert got["ties"] == 6 and got["win_rate"] == 0.5 and got["preference"] == pytest.approx(0.5)

    # a candidate worse in one order only: 0.6 for it as A, 0.3 as B -> a tie, preference 0.45
    def uneven(conv, letters):
        a_is_good = "GOOD" in conv[-1]["content"].split("Answer A:")[1].split("Answer B:")[0]
        p_a = 0.6 if a_is_good else 0.7
        return [math.log(p_a), math.log(1 - p_a)]

    got = against_op(tmp_path, ScriptedBackend(option_logprobs=uneven), verdict="logprobs").evaluate()
    assert got["ties"] == 6 and got["preference"] == pytest.approx((0.6 + 0.3) / 2)
    # no mass on either letter is no verdict: excluded and counted
    dead = ScriptedBackend(option_logprobs=lambda c, o: [float("-inf"), float("-inf")])
    got = against_op(tmp_path, dead, verdict="logprobs").evaluate()
    assert got["judged"] == 0 and got["unparsed_verdicts"] == 6 and math.isnan(got["win_rate"])


def test_against_and_letter_verdicts_are_pairwise_only(tmp_path):
    with pytest.raises(ValueError, match="apply to mode: pairwise"):
        against_op(tmp_path, letter_judge(0.7), mode="single")


def test_judge_decodes_greedily_with_mt_bench_budget(tmp_path):
    op, _ = judge_op(tmp_path, prefers_good)
    assert op.sampling().max_tokens == 2048 and op.sampling().temperature == 0


def test_reference_guided_single_grading_shows_the_reference(tmp_path):
    op, judge = judge_op(
        tmp_path, "Matches the reference. Grade: [[8]]", mode="single", reference_guided=True
    )
    got = op.evaluate()
    assert got["mean_grade"] == 8.0 and got["judged"] == 6 and got["unparsed"] == 0
    assert all("Reference answer:\nreference" in c[-1]["content"] for c in judge.calls)
    plain, judge = judge_op(tmp_path, "[[3]]", mode="single")
    assert plain.evaluate()["mean_grade"] == 3.0
    assert not any("Reference answer" in c[-1]["content"] for c in judge.calls)
    with pytest.raises(ValueError, match="reference_guided"):
        judge_op(tmp_path, "[[3]]", mode="pairwise", reference_guided=True)


def test_single_grades_without_a_grade_are_excluded(tmp_path):
    got = judge_op(tmp_path, lambda c: "[[9]]" if "q0" in c[-1]["content"] else "   ", mode="single")[
        0
    ].evaluate()
    assert got["mean_grade"] == 9.0 and got["judged"] == 1 and got["unparsed"] == 5


@pytest.mark.slow
def test_eval_nll_equals_a_manual_token_weighted_loss(tmp_path, smollm2):
    rows = [
        {"instruction": "What is the capital of France?", "output": "Paris."},
        {"instruction": "Name a primary color.", "output": "Red is a primary color."},
    ]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = ModelSpec(backend="hf", model="embedded:smollm2-135m-instruct", cache="off")
    op = registry.get("eval_nll")(
        {"model": "m", "data": "eval.jsonl"},
        OpContext(models={"m": Model("m", spec, backend=smollm2)}, base_dir=str(tmp_path)),
    )
    got = op.evaluate()
    total, count = 0.0, 0
    for r in io.read_all(str(tmp_path / "eval.jsonl")).rows:
        p, resp = smollm2.split_ids(r["messages"][:1], r["messages"][1]["content"])
        ids = torch.tensor([p + resp])
        with torch.no_grad():
            lp = smollm2.model(ids).logits[0, :-1].log_softmax(-1)
        total -= sum(lp[len(p) - 1 + i, t].item() for i, t in enumerate(resp))
        count += len(resp)
    assert got["nll"] == pytest.approx(total / count, abs=1e-4)
    assert got["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-3) and got["tokens"] == count


@pytest.mark.slow
def test_evaluators_in_a_recipe(tmp_path, shared_data):
    gsm = [json.loads(x) for x in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:3]]
    (tmp_path / "gsm.jsonl").write_text(
        "".join(json.dumps({"instruction": r["question"], "output": r["answer"]}) + "\n" for r in gsm)
    )
    (tmp_path / "d.jsonl").write_text(json.dumps({"instruction": "hi", "output": "hello"}) + "\n")
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: ev
        inputs: [{path: d.jsonl}]
        models:
          m: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}
        steps:
          - eval_accuracy: {model: m, data: gsm.jsonl, task: gsm8k, max_tokens: 64}
          - eval_judge: {model: m, judge: m, data: gsm.jsonl, max_tokens: 32, judge_max_tokens: 32}
          - eval_nll: {model: m, data: gsm.jsonl}
    """)
    )
    rec, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems, problems
    result = LocalExecutor(rec, ops, tmp_path / "run", progress=False).run()
    assert result.rows_out == 1  # the pipeline's rows pass through
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    acc, judge, nll = metrics["01-eval_accuracy"], metrics["02-eval_judge"], metrics["03-eval_nll"]
    assert 0 <= acc["accuracy"] <= 1 and acc["rows"] == 3
    # the 135M judge rarely gives a verdict in 32 tokens: a pair without one is excluded and counted
    assert judge["wins"] + judge["ties"] + judge["losses"] == judge["judged"]
    assert judge["judged"] + judge["excluded"] == 3 and judge["failed_answers"] == 0
    assert judge["unparsed_verdicts"] >= judge["excluded"]  # every excluded pair has a reply without one
    assert judge["judged"] == 0 or 0 <= judge["win_rate"] <= 1
    assert nll["nll"] > 0 and nll["rows"] == 3
    assert load_manifest(tmp_path / "run")["steps"][3]["stats"]["metrics"] == nll


def eval_op(tmp_path, name, rows, **backends_and_params):
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    backends = {k: v for k, v in backends_and_params.items() if isinstance(v, ScriptedBackend)}
    params = {k: v for k, v in backends_and_params.items() if k not in backends}
    ctx = context(**backends)
    ctx.base_dir = str(tmp_path)
    return registry.get(name)({"model": "m", "data": "eval.jsonl", **params}, ctx)


def test_accuracy_counts_unparsed_answers_as_wrong_and_says_how_many_failed(tmp_path):
    rows = [
        {"instruction": "q1", "output": "The answer is (B)."},
        {"instruction": "q2", "output": "Answer: C"},
        {"instruction": "q3", "output": "A. yes"},
        {"instruction": "q4", "output": "D"},
    ]
    replies = [("q1", "B. because"), ("q2", "I am not sure."), ("q3", "A dog would say A."), ("q4", None)]
    op = eval_op(tmp_path, "eval_accuracy", rows, m=ScriptedBackend(script=replies), task="multiple_choice")
    got = op.evaluate()
    # q1 right; q2 no letter; q3 "A dog" is no answer, but "say A." is not one either; q4 failed
    assert got["accuracy"] == 0.25 and got["rows"] == 4 and got["failed"] == 1


def test_nll_is_token_weighted_over_the_set(tmp_path):
    rows = [{"instruction": "q1", "output": "one two"}, {"instruction": "q2", "output": "three"}]
    backend = ScriptedBackend(logprob=lambda conv, r: -1.0 if "q1" in conv[-1]["content"] else -4.0)
    got = eval_op(tmp_path, "eval_nll", rows, m=backend).evaluate()
    assert got["nll"] == pytest.approx((1.0 * 2 + 4.0 * 1) / 3) and got["tokens"] == 3
    assert got["perplexity"] == pytest.approx(math.exp(2.0), abs=1e-3)
