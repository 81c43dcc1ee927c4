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


@pytest.mark.slow
def test_distill_recipe_across_tokenizers(shipped_runs, smollm2):
    """The recipe's DSKD step on the real pair (SmolLM2 -> a MiniLM-vocabulary student), and the other
    two losses on its rows: MinED aligns most answer tokens of the two tokenizers, ULD equals an
    independent computation from the two models' distributions."""
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dataflywheel.models import embedded
    from dataflywheel.train import xtok as X

    run_dir, result = shipped_runs["distill"]
    assert result.exit_code == 0, result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    steps = manifest["steps"]
    xtok = next(s for s in steps if s["op"] == "xtok_distill")
    stats = xtok["stats"]["train"]
    assert (stats["loss"], stats["examples"], stats["steps"]) == ("dskd", 16, 2)
    assert all(np.isfinite(stats["losses"])) and stats["kd_first"] > 0
    projectors = torch.load(Path(run_dir / xtok["dir"]) / "checkpoint" / "projector.pt")
    assert projectors["query.weight"].shape == (2 * 576, 2 * 384)  # student [in; target] -> teacher space
    assert projectors["t2s.weight"].shape == (384, 576) and projectors["s2t.weight"].shape == (576, 384)
    nll = [s["stats"]["metrics"]["nll"] for s in steps if s["op"] == "eval_nll"]
    assert nll[3] < nll[2]  # the student learned: 2 steps from random layers

    rows = pq.read_table(sorted(Path(run_dir / steps[1]["dir"]).glob("shard-*.parquet"))).to_pylist()[:2]
    path = embedded.resolve(embedded.MINILM_STUDENT)
    s_tok = AutoTokenizer.from_pretrained(path)
    student = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prepared, skipped, _ = X.prepare(s_tok, smollm2.tokenizer, [r["messages"] for r in rows], 512, "mined")
    flat = [a for r in prepared for a in r["alignment"]]
    assert skipped == 0 and sum(a >= 0 for a in flat) > 0.5 * len(flat)
    pads = (s_tok.pad_token_id, smollm2.tokenizer.pad_token_id)
    with torch.no_grad():
        _, parts = X.kd_step(student, smollm2.model, None, prepared[:1], "uld", 0.5, 1.0, None, pads)
        s, t = prepared[0]["student"], prepared[0]["teacher"]
        sl = student(torch.tensor([s["input_ids"]])).logits[0].double().softmax(-1).numpy()
        tl = smollm2.model(torch.tensor([t["input_ids"]])).logits[0].double().softmax(-1).numpy()
    sp, tp = X.content_positions(s["labels"]), X.content_positions(t["labels"])
    n = min(len(sp), len(tp))
    dist = []
    for a, b in zip(sp[:n], tp[:n], strict=True):
        ps, pt = np.sort(sl[a])[::-1], np.sort(tl[b])[::-1]
        ps = np.pad(ps, (0, len(pt) - len(ps)))  # the student's 30522 tokens against the teacher's 49152
        dist.append(np.abs(ps - pt).sum())
    assert parts["kd"] == pytest.approx(float(np.mean(dist)), rel=1e-4)
