"""CLUES on the real SmolLM2: samples with corrupted answers score below clean ones."""

from __future__ import annotations

import json
import textwrap
from typing import ClassVar

import numpy as np
import orjson
import pytest

pytestmark = pytest.mark.slow


def test_clues_scores_corrupted_answers_lower(tmp_path, shared_data):
    gsm = [json.loads(x) for x in (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[:30]]
    chat = json.loads(
        (shared_data / "alpaca_eval" / "reference_outputs" / "text_davinci_003.json").read_text()
    )
    rows = []
    for i, r in enumerate(gsm[:20]):
        corrupt = i % 2 == 1  # half the answers do not answer the question: an unrelated chat reply
        answer = chat[i]["output"] if corrupt else r["answer"]
        rows.append(
            {
                "instruction": r["question"],
                "output": answer[:300],
                "corrupt": corrupt,
                "origin_client": f"client{i % 3}",
            }
        )
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "anchor.jsonl").write_text(
        "".join(
            json.dumps({"instruction": r["question"], "output": r["answer"][:300]}) + "\n" for r in gsm[24:28]
        )
    )
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: clues
        inputs: [{path: pool.jsonl}]
        models:
          m: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}
        steps:
          - clues: {model: m, anchor: anchor.jsonl, rule: ratio, ratio: 0.5, epochs: 2, lr: 1e-4, lora_r: 4,
                    max_length: 160, batch_size: 5}
    """)
    )
    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.engine.runinfo import drop_log
    from dataflywheel.recipe.validate import validate_file

    rec, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems, problems
    result = LocalExecutor(rec, ops, tmp_path / "run", progress=False).run()
    kept = [orjson.loads(x) for x in result.output_path.read_bytes().splitlines()]
    dropped = [orjson.loads(r) for r in drop_log(tmp_path / "run").column("row").to_pylist()]
    assert len(kept) == 10 and len(dropped) == 10
    clean_kept = sum(not r["corrupt"] for r in kept)
    assert clean_kept >= 7, [r["corrupt"] for r in kept]  # chance: 5 of 10
    assert np.isfinite([r["score_clues"] for r in kept]).all()


class _ScriptedGradients:
    """Stands in for the LoRA copy: each example's gradient is a fixed vector (its `messages` text names
    it), and the one checkpoint's Adam moments make Adam directions ~1000x larger than plain gradients."""

    VECTORS: ClassVar[dict[str, list[float]]] = {
        "anchor": [1.0, 0.0, 0.0],
        "good": [1.0, 0.2, 0.0],
        "weak": [3e-3, 0.0, 0.0],  # plain score 0.003, Adam score ~1.76: between the two anchor scales
        "bad": [-1.0, 0.1, 0.3],
    }

    def __init__(self):
        from dataflywheel.lib.gradients import Checkpoint

        self.checkpoint = Checkpoint(
            lora={}, exp_avg={"w": np.zeros(3)}, exp_avg_sq={"w": np.full(3, 1e-8)}, lr=1.0
        )
        self.n_params = 3

    def example(self, messages):
        return messages[-1]["content"].split()[0]

    def warmup(self, examples, epochs, lr, batch_size):
        return [self.checkpoint]

    def per_sample_grads(self, examples, lora, batch_size):
        return np.array([self.VECTORS[e] for e in examples])

    def flat(self, state):
        return state["w"]


@pytest.mark.parametrize("adam", [False, True])
def test_clues_anchor_percentile_threshold_is_on_the_samples_scale(tmp_path, monkeypatch, adam):
    from dataflywheel.data import io
    from dataflywheel.lib import gradients as G
    from dataflywheel.ops import registry
    from dataflywheel.ops.base import OpContext

    fake = _ScriptedGradients()
    monkeypatch.setattr(
        G, "lora_for_op", lambda op, table, dropout, seed: (fake, pool, list(range(len(pool))))
    )

    def row(kind, i):
        return {
            "messages": [
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"{kind} {i}"},
            ]
        }

    pool = ["anchor", "good", "bad", "anchor", "weak", "good", "bad"]
    table = io.rows_to_table([row(k, i) for i, k in enumerate(pool)])
    (tmp_path / "anchor.jsonl").write_text(
        "".join(orjson.dumps(row("anchor", 100 + i)).decode() + "\n" for i in range(3))
    )
    op = registry.get("clues")(
        {"model": "m", "anchor": "anchor.jsonl", "adam": adam}, OpContext(base_dir=str(tmp_path))
    )
    sel = op.select(table)
    # default rule: keep samples scoring at least the anchors' 10th percentile. The anchor copies score
    # exactly what the anchors score and `good` as much; `bad` (opposed) and `weak` less - on the Adam
    # scale too, where a threshold from plain anchor gradients (1.0) would let `weak` (1.76) through.
    assert sorted(sel.indices.tolist()) == [0, 1, 3, 5]
    assert sel.stats["threshold"] == pytest.approx(sel.columns["score_clues"].to_pylist()[0])
