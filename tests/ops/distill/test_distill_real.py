"""recipes/distill.yaml on the real SmolLM2: the teacher's answers are the data, its stored top-k equals
a direct forward pass, and a student that is the teacher starts at zero divergence."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch


@pytest.mark.slow
def test_distill_recipe_on_smollm2(shipped_runs, smollm2, tmp_path):
    from dataflywheel.train.distill import train_distill
    from dataflywheel.train.tokenize import sft_features
    from dataflywheel.train.trainers import TrainSettings

    run_dir, result = shipped_runs["distill"]
    assert result.exit_code == 0, result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    steps = {s["op"]: s for s in manifest["steps"]}
    assert steps["generate"]["stats"]["models"]["teacher"]["completion_tokens"] > 0  # the teacher's cost
    shards = sorted(Path(run_dir / steps["teacher_topk"]["dir"]).glob("shard-*.parquet"))
    rows = pq.read_table(shards).to_pylist()
    assert len(rows) == 16 and all(r["error_teacher_topk"] is None for r in rows)
    # the stored top-20 of one row, recomputed with the base model
    row = rows[0]
    f = sft_features(smollm2.tokenizer, row["messages"], 512)
    with torch.no_grad():
        logits = smollm2.model(torch.tensor([f["input_ids"]])).logits[0, :-1]
    at = [t for t in range(len(f["labels"]) - 1) if f["labels"][t + 1] != -100]
    top = torch.log_softmax(logits[at].float(), -1).topk(20, -1)
    assert row["teacher_topk_ids"] == top.indices.tolist()
    assert torch.allclose(torch.tensor(row["teacher_topk_logprobs"]), top.values, atol=1e-3)
    # the distilled model is a later step's model, trained on every row
    assert steps["distill"]["stats"]["train"]["examples"] == 16
    # a student that is the teacher: nothing to learn from the divergence at the first step
    s = TrainSettings(lora_r=4, batch_size=2, max_length=512, max_steps=1, precision="float32")
    stats = train_distill(smollm2.path, rows[:2], tmp_path / "ckpt", s, loss="jsd", kd_weight=1.0)
    assert abs(stats["losses"][0]) < 1e-4
