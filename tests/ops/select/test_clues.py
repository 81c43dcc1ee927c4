"""CLUES on the real SmolLM2: samples with corrupted answers score below clean ones."""

from __future__ import annotations

import json
import textwrap

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
