"""RobustFT on MMLU with injected label noise, through the engine, with the real SmolLM2 and MiniLM.

A 135M model answers MMLU near chance, so the test checks what must hold whatever the model answers:
each tag follows from the recorded answers, the recorded entropies are the model's own (recomputed by
a separate forward pass), the kept relabeled rows are exactly those below the median entropy, and
their labels are written into the rows."""

import json

import numpy as np
import pytest

from dataflywheel.engine.runinfo import drop_log
from dataflywheel.experiments.noise import inject_label_noise, read_mmlu, score_repair
from dataflywheel.ops.enhance.robustft import _prompt
from dataflywheel.ops.prompts import fill
from tests.conftest import run_recipe


@pytest.mark.slow
def test_robustft_repairs_injected_noise_on_mmlu(tmp_path, shared_data, smollm2):
    noisy = inject_label_noise(read_mmlu(shared_data / "mmlu_test" / "test", per_subject=4, subjects=2), 0.5)
    with open(tmp_path / "mmlu.jsonl", "w") as f:
        for i, row in enumerate(noisy.rows):
            f.write(json.dumps({"id": str(i), **row}) + "\n")
    result, _ = run_recipe(
        tmp_path,
        """
        version: 1
        name: robustft
        inputs: [{path: mmlu.jsonl}]
        models:
          lm: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}
          emb: {backend: sentence-transformers, model: 'embedded:all-minilm-l6-v2', device: cpu}
        steps:
          - robustft_detect: {model: lm, answer_field: answer, max_tokens: 32}
          - robustft_relabel: {model: lm, embedder: emb, answer_field: answer, max_tokens: 32}
        output: {path: repaired.jsonl}
        """,
    )
    out = {r["id"]: r for r in map(json.loads, open(result.output_path))}
    drops = drop_log(result.run_dir).to_pylist()
    dropped = {d["id"]: {**d, "row": json.loads(d["row"])} for d in drops}
    assert len(out) + len(dropped) == 8
    everything = {**{k: d["row"] for k, d in dropped.items()}, **out}
    for i, row in everything.items():
        given = noisy.rows[int(i)]["answer"]
        assert row["robustft_label"] == given
        agree = row["robustft_direct"] == given and row["robustft_reasoned"] == given
        assert row["tag_robustft"] == ("clean" if agree else "noisy")
    # The reasoned answer's entropy is the model's mean NLL of the reply it generated, recomputed by a
    # separate forward pass. A sampled token sequence is not always the tokenizer's own encoding of its
    # text (one of these 8 re-encodes to one more token), so most rows, not all, must match exactly.
    matched = 0
    for row in everything.values():
        question = row["messages"][0]["content"]
        conv = [{"role": "user", "content": fill(_prompt("reason"), question=question)}]
        (lp,) = smollm2.logprobs([conv], [row["robustft_reasoning"]])
        matched += abs(row["score_robustft_entropy_r"] + np.mean(lp.logprobs)) < 2e-3
    assert matched >= 6
    # noisy rows: kept exactly when their context-enhanced entropy is below the median over the noisy rows
    noisy_rows = {k: r for k, r in everything.items() if r["tag_robustft"] == "noisy"}
    assert noisy_rows, "a 135M model disagrees with at least one of 8 labels, half of them wrong"
    h = [r.get("score_robustft_entropy") for r in noisy_rows.values()]
    h = [x for x in h if x is not None]
    median = float(np.median(h)) if h else None
    for k, r in noisy_rows.items():
        if k in out:
            assert r["robustft_relabeled"] and r["score_robustft_entropy"] < median
            assert (
                r["answer"] == r["robustft_final"]
                and r["messages"][-1]["content"] == f"Answer: {r['answer']}"
            )
        else:
            d = dropped[k]
            assert d["reason"].startswith("robustft:")
            if d["reason"] == "robustft: relabel entropy not below the median":
                assert d["row"]["score_robustft_entropy"] >= median  # the drop log keeps what it saw
    for k, r in out.items():
        if r["tag_robustft"] == "clean":
            assert r["answer"] == noisy.rows[int(k)]["answer"] and not r["robustft_relabeled"]
    score = score_repair(
        noisy, {k: r["tag_robustft"] for k, r in everything.items()}, {k: r["answer"] for k, r in out.items()}
    )
    assert score.flagged == len(noisy_rows) and score.kept == len(out)
