"""Pruning with recovery on the real SmolLM2: prune to 70% of the parameters by first-order Taylor
importance on 8 rows, measure, recover with LoRA SFT, measure again; the pruned checkpoint is a model
later steps load through the hf backend."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, run_recipe


@pytest.mark.slow
def test_prune_and_recover_smollm2(tmp_path):
    pool = ROOT / "examples" / "demo_pool.jsonl"
    heldout = ROOT / "examples" / "demo_heldout.jsonl"
    model = "{backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}"
    _, manifest = run_recipe(
        tmp_path,
        f"""
        version: 1
        name: prune
        inputs: [{{path: '{pool}', limit: 8}}]
        on_error: skip
        models: {{base: {model}}}
        steps:
          - prune: {{model: base, output_model: pruned, target: 0.7, calibration: 8}}
          - eval_nll: {{model: base, data: '{heldout}'}}
          - eval_nll: {{model: pruned, data: '{heldout}'}}
          - sft: {{model: pruned, output_model: recovered, max_steps: 2, batch_size: 4, lr: 0.001,
                  warmup_ratio: 0}}
          - eval_nll: {{model: recovered, data: '{heldout}'}}
        output: {{path: out.jsonl}}
        """,
    )
    steps = manifest["steps"]
    prune = steps[1]["stats"]["train"]
    assert prune["parameters_before"] == 134_515_008
    assert prune["kept_fraction"] == pytest.approx(0.70, abs=0.005)
    assert (prune["kv_heads"], prune["attention_heads"]) == (2, 6) and prune["calibration_rows"] == 8
    assert prune["bytes_on_disk"] < 0.72 * 4 * prune["parameters_before"]  # float32 weights
    base, pruned, recovered = (s["stats"]["metrics"]["nll"] for s in steps if s["op"] == "eval_nll")
    assert pruned > base  # removing 30% of the weights costs held-out loss
    assert recovered != pruned and all(m > 0 for m in (base, pruned, recovered))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())
