"""AlpaGasus: prompts, parsing and error paths with a scripted grader; on the real SmolLM2 the scores
equal an independent generation parsed by hand, and the expected-score variant a manual next-token
distribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataflywheel.data import io
from dataflywheel.models.client import Model
from dataflywheel.ops import registry
from dataflywheel.ops.base import OpContext
from dataflywheel.ops.parsing import parse_score
from dataflywheel.recipe.models import ModelSpec
from tests.fakes import ScriptedBackend, context

ROWS = [
    {
        "messages": [
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "2 + 2 = 4."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "What is the capital of Canada?"},
            {"role": "assistant", "content": "The capital of Canada is Toronto."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Name a primary color."},
            {"role": "assistant", "content": "Blue."},
        ]
    },
]


def op(smollm2, **params):
    spec = ModelSpec(backend="hf", model="embedded:smollm2-135m-instruct", cache="off")
    o = registry.get("alpagasus")(
        {"model": "m", **params}, OpContext(models={"m": Model("m", spec, backend=smollm2)})
    )
    return o


@pytest.mark.slow
def test_generate_mode_reads_what_the_real_model_replied(smollm2):
    """Unconstrained, the op's score is exactly what parsing an independent greedy generation of its
    prompt gives."""
    o = op(smollm2, max_tokens=32, constrained="off")
    out = o.score(io.rows_to_table(ROWS))
    scores, errors = out["score_alpagasus"].to_pylist(), out["error_alpagasus"].to_pylist()
    raws = out["raw_alpagasus"].to_pylist()
    for row, score, err, raw in zip(ROWS, scores, errors, raws, strict=True):
        ids = torch.tensor([smollm2.encode(smollm2.render(o.prompt(row)))])
        with torch.no_grad():
            new = smollm2.model.generate(ids, max_new_tokens=32, do_sample=False)[0, ids.shape[1] :]
        text = smollm2.tokenizer.decode(new, skip_special_tokens=True)
        assert raw == [text]
        assert score == parse_score(text, 0, 5)
        assert (err is None) == (score is not None)
    assert o.stats["unparsed"] == scores.count(None) and o.stats["requests"] == 3


@pytest.mark.slow
def test_generate_mode_under_its_shape_reads_every_score(smollm2):
    """Constrained (the default), the score comes first on its line and every reply is read; each equals
    a separate call under the same shape."""
    from dataflywheel.models.base import Sampling

    o = op(smollm2, max_tokens=32)
    out = o.score(io.rows_to_table(ROWS))
    scores = out["score_alpagasus"].to_pylist()
    assert o.stats["requests"] == 3 and o.stats["unparsed"] == 0 and None not in scores
    again = smollm2.chat([o.prompt(r) for r in ROWS], Sampling(max_tokens=32, constraint=o.shape()))
    assert scores == [parse_score(r.text, 0, 5) for r in again]


@pytest.mark.slow
def test_expected_mode_equals_a_manual_next_token_distribution(smollm2):
    o = op(smollm2, mode="expected")
    out = o.score(io.rows_to_table(ROWS))["score_alpagasus"].to_pylist()
    prompts = [o.prompt(r) for r in ROWS]
    token_ids = [smollm2.encode(str(k))[0] for k in range(6)]
    for got, conv in zip(out, prompts, strict=True):
        ids = torch.tensor([smollm2.encode(smollm2.render(conv))])
        with torch.no_grad():
            logits = smollm2.model(ids).logits[0, -1].float()
        p = torch.softmax(logits[token_ids], dim=0).numpy()
        assert got == pytest.approx(float(np.dot(p, np.arange(6))), abs=1e-4)
        assert 0 <= got <= 5


def scripted(**script):
    backend = ScriptedBackend(
        script=[("capital of Canada", "2\nToronto is wrong."), ("2 + 2", "Score: 5"), ("primary", "   ")],
        **script,
    )
    o = registry.get("alpagasus")({"model": "m"}, context(m=backend))
    return o, backend


def test_prompt_holds_the_instruction_and_the_response_with_the_system_prompt():
    o, _ = scripted()
    conv = o.prompt(ROWS[1])
    assert [m["role"] for m in conv] == ["system", "user"]
    assert "What is the capital of Canada?" in conv[1]["content"]
    assert "The capital of Canada is Toronto." in conv[1]["content"]
    assert "0 to 5" in conv[1]["content"]


def test_scores_unparsed_and_failed_replies_are_recorded_per_row():
    o, _ = scripted()
    failing = {"messages": [{"role": "user", "content": "boom"}, {"role": "assistant", "content": "x"}]}
    backend = ScriptedBackend(script=[("boom", None)], default="Score: 3")
    f = registry.get("alpagasus")({"model": "m"}, context(m=backend))
    out = o.score(io.rows_to_table(ROWS))
    assert out["score_alpagasus"].to_pylist() == [5.0, 2.0, None]
    errors = out["error_alpagasus"].to_pylist()
    assert errors[:2] == [None, None] and errors[2].startswith("unparsed reply")
    assert out["raw_alpagasus"].to_pylist() == [["Score: 5"], ["2\nToronto is wrong."], ["   "]]
    assert dict(o.stats) == {"requests": 3, "replies": 3, "unparsed": 1}
    got = f.score(io.rows_to_table([failing, ROWS[0]]))
    assert got["score_alpagasus"].to_pylist() == [None, 3.0]
    assert got["error_alpagasus"].to_pylist()[0] == "request failed: scripted failure"
    assert f.stats["failed"] == 1 and f.stats["unparsed"] == 0


def test_sampling_parameters_reach_the_model():
    o = registry.get("alpagasus")(
        {"model": "m", "temperature": 0.7, "n": 3, "seed": 5}, context(m=ScriptedBackend())
    )
    s = o.sampling()
    assert (s.temperature, s.n, s.seed, s.max_tokens) == (0.7, 3, 5, 256)


def test_expected_mode_with_no_finite_score_token_is_unparsed():
    backend = ScriptedBackend(option_logprobs=lambda conv, opts: [float("-inf")] * len(opts))
    o = registry.get("alpagasus")({"model": "m", "mode": "expected"}, context(m=backend))
    out = o.score(io.rows_to_table(ROWS[:1]))
    assert out["score_alpagasus"].to_pylist() == [None] and o.stats["unparsed"] == 1
