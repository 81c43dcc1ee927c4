"""Active Instruction Tuning's prompt uncertainty on the real SmolLM2, against a manual computation."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
import torch

from dataflywheel.data import io
from dataflywheel.models.base import Sampling
from dataflywheel.models.client import Model
from dataflywheel.ops import registry
from dataflywheel.ops.base import OpContext
from dataflywheel.ops.select.prompt_uncertainty import perturb
from dataflywheel.recipe.models import ModelSpec


def test_perturbation_is_seeded_and_drops_words():
    text = " ".join(f"w{i}" for i in range(200))
    a, b = perturb(text, 0.2, 0, "row1", 0), perturb(text, 0.2, 0, "row1", 0)
    assert a == b and a != perturb(text, 0.2, 0, "row1", 1) and a != perturb(text, 0.2, 0, "row2", 0)
    kept = len(a.split())
    assert 120 < kept < 195 and set(a.split()) <= set(text.split())


def test_group_select_keeps_whole_groups():
    t = pa.table(
        {
            "id": list("abcdef"),
            "tag_task": ["x", "x", "y", "y", "z", "z"],
            "score_pu": [0.1, 0.3, 0.9, 0.7, 0.5, None],
        }
    )
    sel = registry.get("group_select")({"by": "tag_task", "score": "score_pu", "k": 2}, OpContext()).select(t)
    assert sel.indices.tolist() == [2, 3, 4, 5]  # y (0.8) and z (0.5) beat x (0.2)
    assert sel.columns["score_group_pu"].to_pylist()[:2] == pytest.approx([0.2, 0.2])


@pytest.mark.slow
def test_prompt_uncertainty_equals_a_manual_computation(smollm2):
    rows = [
        {
            "id": "r1",
            "messages": [
                {"role": "user", "content": "List three colors of the rainbow, separated by commas."},
                {"role": "assistant", "content": "x"},
            ],
        }
    ]
    spec = ModelSpec(backend="hf", model="embedded:smollm2-135m-instruct", cache="off")
    op = registry.get("prompt_uncertainty")(
        {"model": "m", "perturbations": 3, "max_tokens": 16},
        OpContext(models={"m": Model("m", spec, backend=smollm2)}),
    )
    table = io.rows_to_table(rows)
    out = op.score(table)
    instruction = rows[0]["messages"][0]["content"]
    pred = smollm2.chat([[{"role": "user", "content": instruction}]], Sampling(max_tokens=16))[0].text

    def likelihood(text):
        p, r = smollm2.split_ids([{"role": "user", "content": text}], pred)
        ids = torch.tensor([p + r])
        labels = ids.clone()
        labels[0, : len(p)] = -100
        with torch.no_grad():
            return math.exp(-smollm2.model(ids, labels=labels).loss.item())

    p0 = likelihood(instruction)
    pk = [likelihood(perturb(instruction, 0.2, 0, "r1", k)) for k in range(3)]
    assert out["score_pp"][0] == pytest.approx(p0, abs=1e-4)
    assert out["score_pu"][0] == pytest.approx(sum(abs(p0 - q) for q in pk) / 3, abs=1e-4)
    assert 0 <= out["score_pu"][0] <= 1


def test_only_the_instruction_is_perturbed_never_the_input():
    from dataflywheel.ops.select.prompt_uncertainty import split_instruction
    from tests.fakes import ScriptedBackend, context

    words = " ".join(f"w{i}" for i in range(30))
    rows = [
        {"id": "a", "messages": [{"role": "user", "content": f"{words}\n\nINPUT stays whole here"}]},
        {"id": "b", "messages": [{"role": "user", "content": f"Task: {words} Now: x=1"}], "task": words},
        {"id": "c", "messages": [{"role": "user", "content": words}]},
    ]
    backend = ScriptedBackend(default="an answer")
    op = registry.get("prompt_uncertainty")(
        {"model": "m", "perturbations": 4, "instruction_column": "task"}, context(m=backend)
    )
    table = io.rows_to_table([{**r, "task": r.get("task")} for r in rows])
    out = op.score(table)
    assert all(v is not None for v in out["score_pu"])
    scored = backend.calls[3:]  # after the three greedy predictions: 5 prompts per row
    for r, prompts in zip(rows, [scored[0:5], scored[5:10], scored[10:15]], strict=True):
        turn = r["messages"][0]["content"]
        before, instruction, after = split_instruction(turn, r.get("task"))
        assert prompts[0][-1]["content"] == turn
        for conv in prompts[1:]:
            text = conv[-1]["content"]
            assert text.startswith(before) and text.endswith(after)
            middle = text[len(before) : len(text) - len(after)].split()
            assert set(middle) <= set(instruction.split()) and len(middle) < len(instruction.split())
    assert split_instruction(rows[0]["messages"][0]["content"])[2] == "\n\nINPUT stays whole here"
    assert split_instruction(rows[1]["messages"][0]["content"], words) == ("Task: ", words, " Now: x=1")
    assert split_instruction(words) == ("", words, "")


def test_a_failed_or_empty_prediction_is_recorded_not_scored():
    from tests.fakes import ScriptedBackend, context

    rows = [
        {"id": "a", "messages": [{"role": "user", "content": "one two three four"}]},
        {"id": "b", "messages": [{"role": "user", "content": "fail here please"}]},
        {"id": "c", "messages": [{"role": "user", "content": "empty here please"}]},
    ]
    backend = ScriptedBackend(script=[("fail", None), ("empty", " ")], default="an answer")
    op = registry.get("prompt_uncertainty")({"model": "m", "perturbations": 2}, context(m=backend))
    out = op.score(io.rows_to_table(rows))
    assert out["score_pu"][0] is not None and out["score_pu"][1:] == [None, None]
    errors = out["error_pu"].to_pylist()
    assert errors[0] is None and errors[1] == "request failed: scripted failure"
    assert errors[2].startswith("unparsed reply")
    assert op.stats["failed"] == 1 and op.stats["unparsed"] == 1
