"""LESS: projection, Adam direction, per-sample gradients, and in-domain selection on the real SmolLM2."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import orjson
import pytest

from dataflywheel.lib import gradients as G


def test_projection_preserves_cosines_within_the_jl_bound():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5000)).astype(np.float32)
    x[1] = x[0] + 0.3 * rng.normal(size=5000)  # one close pair among random ones
    for d in (256, 1024):
        px = G.normalize(G.project(x, d, seed=3))
        exact = G.normalize(x) @ G.normalize(x).T
        err = np.abs(px @ px.T - exact).max()
        assert err < 4 / np.sqrt(d)  # JL: cosine error of order 1/sqrt(d)
    # the step size is invisible: the same seed gives the same projection
    np.testing.assert_allclose(
        G.project(x, 64, seed=1), G.project(x, 64, seed=1, blocks_per_step=1), atol=1e-3
    )


def test_adam_direction_matches_a_hand_computation():
    g, m, v = np.array([0.5, -1.0]), np.array([0.1, 0.2]), np.array([0.01, 0.04])
    m2 = 0.9 * m + 0.1 * g
    v2 = 0.999 * v + 0.001 * g**2
    np.testing.assert_allclose(G.adam_direction(g, m, v), m2 / np.sqrt(v2 + 1e-8))


@pytest.mark.slow
def test_batched_gradients_equal_one_backward_per_sample(smollm2):
    lg = G.LoraGradients(smollm2, r=4, alpha=16, dropout=0.0, targets=("q_proj", "v_proj"), max_length=96)
    convs = [
        [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        for q, a in [
            ("What is 2+2?", "4"),
            ("Name a color.", "Blue, like the sky."),
            ("Say hi.", "Hello there, friend!"),
        ]
    ]
    ex = [lg.example(c) for c in convs]
    lora = {n: p.detach().clone() for n, p in lg.model.named_parameters() if p.requires_grad}
    slow = lg.per_sample_grads_loop(ex, lora)
    for method in ("hooks", "vmap"):
        fast = lg.per_sample_grads(ex, lora, batch_size=3, method=method)
        np.testing.assert_allclose(fast, slow, atol=1e-5, rtol=1e-4)
        assert fast.shape == (3, lg.n_params) and np.abs(fast).sum() > 0


@pytest.mark.slow
def test_multi_turn_examples_take_the_loss_of_every_assistant_turn(smollm2):
    lg = G.LoraGradients(smollm2, r=4, alpha=16, dropout=0.0, targets=("q_proj", "v_proj"), max_length=256)
    conv = [
        {"role": "user", "content": "Name a color."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And a fruit?"},
        {"role": "assistant", "content": "An apple."},
    ]
    ex = lg.example(conv)
    labelled = smollm2.tokenizer.decode([t for t in ex.labels if t != -100])
    assert "Blue." in labelled and "An apple." in labelled  # both answers, not only the last
    assert "Name a color" not in labelled and "fruit" not in labelled
    last_only = lg.example(conv[:2])
    assert sum(t != -100 for t in ex.labels) > sum(t != -100 for t in last_only.labels)
    lora = {n: p.detach().clone() for n, p in lg.model.named_parameters() if p.requires_grad}
    np.testing.assert_allclose(
        lg.per_sample_grads([ex], lora, batch_size=1),
        lg.per_sample_grads_loop([ex], lora),
        atol=1e-5,
        rtol=1e-4,
    )


@pytest.mark.slow
def test_less_picks_in_domain_rows(tmp_path, shared_data):
    gsm = [json.loads(x) for x in (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[:28]]
    chat = json.loads(
        (shared_data / "alpaca_eval" / "reference_outputs" / "text_davinci_003.json").read_text()
    )
    math_rows = [
        {"instruction": r["question"], "output": r["answer"][:400], "domain": "math"} for r in gsm[:12]
    ]
    chat_rows = [
        {"instruction": r["instruction"], "output": r["output"][:400], "domain": "chat"} for r in chat[:12]
    ]
    pool = [row for pair in zip(math_rows, chat_rows, strict=True) for row in pair]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (tmp_path / "target.jsonl").write_text(
        "".join(
            json.dumps({"instruction": r["question"], "output": r["answer"][:400]}) + "\n" for r in gsm[20:24]
        )
    )
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: less
        inputs: [{path: pool.jsonl}]
        models:
          m: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}
        steps:
          - less: {model: m, target: target.jsonl, k: 8, warmup_fraction: 0.25, epochs: 2, lr: 1e-4,
                   lora_r: 4, lora_alpha: 16, lora_targets: [q_proj, v_proj], projection_dim: 512,
                   max_length: 160, batch_size: 4}
    """)
    )
    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.recipe.validate import validate_file

    rec, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems, problems
    result = LocalExecutor(rec, ops, tmp_path / "run", progress=False).run()
    out = [orjson.loads(x) for x in result.output_path.read_bytes().splitlines()]
    precision = sum(r["domain"] == "math" for r in out) / len(out)
    assert len(out) == 8 and precision >= 0.875, [r["domain"] for r in out]  # chance is 0.5
