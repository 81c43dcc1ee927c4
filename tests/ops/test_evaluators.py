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
from dataflywheel.models.base import Backend, ChatResult, Completion
from dataflywheel.models.client import Model
from dataflywheel.ops import registry
from dataflywheel.ops.base import OpContext
from dataflywheel.ops.evaluate.judge import pairwise_outcome
from dataflywheel.recipe.models import ModelSpec
from dataflywheel.recipe.validate import validate_file


@pytest.mark.parametrize(
    ("first", "second", "want"),
    [
        ("A", "B", "win"),
        ("B", "A", "loss"),
        ("A", "A", "tie"),
        ("B", "B", "tie"),
        ("C", "B", "tie"),
        (None, "B", "tie"),
    ],
)
def test_pairwise_outcome_needs_both_orders(first, second, want):
    assert pairwise_outcome(first, second) == want


class Scripted(Backend):
    """Control flow only: the candidate answers "GOOD <q>"; the judge prefers whichever answer says GOOD,
    or always says [[A]] when `biased` (pure position bias)."""

    capabilities = frozenset({"chat"})

    def __init__(self, biased=False):
        self.biased = biased

    @property
    def fingerprint(self):
        return f"scripted-{self.biased}"

    def chat(self, conversations, sampling):
        out = []
        for c in conversations:
            text = c[-1]["content"]
            if "Answer A:" in text:
                a = text.split("Answer A:")[1].split("Answer B:")[0]
                verdict = "[[A]]" if self.biased or "GOOD" in a else "[[B]]"
                out.append(ChatResult([Completion(f"Because. {verdict}", "stop", 3)], 5))
            else:
                out.append(ChatResult([Completion(f"GOOD {text}", "stop", 3)], 5))
        return out


def judge_op(tmp_path, biased):
    rows = [{"instruction": f"q{i}", "output": f"reference {i}"} for i in range(6)]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = ModelSpec(backend="openai", model="x", base_url="http://127.0.0.1:1/v1", cache="off")
    models = {
        "cand": Model("cand", spec, backend=Scripted()),
        "judge": Model("judge", spec, backend=Scripted(biased)),
    }
    return registry.get("eval_judge")(
        {"model": "cand", "judge": "judge", "data": "eval.jsonl"},
        OpContext(models=models, base_dir=str(tmp_path)),
    )


def test_win_rate_and_position_bias(tmp_path):
    fair = judge_op(tmp_path, biased=False).evaluate()
    assert fair["win_rate"] == 1.0 and fair["wins"] == 6 and fair["unparsed_verdicts"] == 0
    biased = judge_op(tmp_path, biased=True).evaluate()  # always "A": inconsistent, so every pair ties
    assert biased["win_rate"] == 0.5 and biased["ties"] == 6


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
    assert judge["wins"] + judge["ties"] + judge["losses"] == 3 and 0 <= judge["win_rate"] <= 1
    assert nll["nll"] > 0 and nll["rows"] == 3
    assert load_manifest(tmp_path / "run")["steps"][3]["stats"]["metrics"] == nll
