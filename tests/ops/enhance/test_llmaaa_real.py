"""LLMaAA through the engine with the real SmolLM2 annotating and MiniLM embedding: each annotation is
recomputed independently (nearest gold rows by numpy cosine, the same prompt, a separate greedy call)."""

import json
from pathlib import Path

import numpy as np
import pytest

from dataflywheel.models.base import Sampling
from dataflywheel.ops.enhance.llmaaa import annotation_prompt, parse_label
from tests.conftest import run_recipe

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_llmaaa_annotates_with_retrieved_gold_rows(tmp_path, smollm2, minilm):
    rows = [json.loads(x) for x in (ROOT / "examples" / "sentiment.jsonl").read_text().splitlines()]
    pos = [r for r in rows if r["label"] == "positive"]
    neg = [r for r in rows if r["label"] == "negative"]
    gold = pos[:2] + neg[:2]
    pool = pos[2:6] + neg[2:6]
    with open(tmp_path / "data.jsonl", "w") as f:
        for i, r in enumerate(gold):
            f.write(json.dumps({"id": f"g{i}", "instruction": r["text"], "tag_sent": r["label"]}) + "\n")
        for i, r in enumerate(pool):
            f.write(json.dumps({"id": f"p{i}", "instruction": r["text"], "true_label": r["label"]}) + "\n")
    result, _ = run_recipe(
        tmp_path,
        """
        version: 1
        name: llmaaa
        inputs: [{path: data.jsonl}]
        models:
          lm: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}
          emb: {backend: sentence-transformers, model: 'embedded:all-minilm-l6-v2', device: cpu}
        steps:
          - llmaaa: {model: lm, embedder: emb, column: tag_sent, k: 2, init: 4, per_round: 2, rounds: 2,
                     epochs: 20, task: 'Classify the sentiment of the review.'}
        output: {path: out.jsonl}
        """,
    )
    out = [json.loads(x) for x in open(result.output_path)]
    assert len(out) == 12
    rounds = sorted(r["llmaaa_round"] for r in out if r.get("llmaaa_round") is not None)
    assert rounds == [0, 0, 0, 0, 1, 1, 2, 2]
    gold_rows = [r for r in out if r["id"].startswith("g")]
    g_text = [r["messages"][0]["content"] for r in gold_rows]
    g_vec = minilm.embed(g_text)
    g_vec /= np.linalg.norm(g_vec, axis=1, keepdims=True)
    labels = ["negative", "positive"]
    annotated = [r for r in out if r.get("llmaaa_round") is not None]
    for r in annotated:
        text = r["messages"][0]["content"]
        v = minilm.embed([text])[0]
        near = np.argsort(-(g_vec @ (v / np.linalg.norm(v))), kind="stable")[:2]
        demos = [(g_text[j], gold_rows[j]["tag_sent"]) for j in near]
        prompt = annotation_prompt("Classify the sentiment of the review.", labels, demos, text)
        (reply,) = smollm2.chat([[{"role": "user", "content": prompt}]], Sampling(max_tokens=16))
        got = parse_label(reply.text, labels)
        if got is None:
            assert r["tag_sent"] is None and r["error_llmaaa"].startswith("unparsed")
        else:
            assert r["tag_sent"] == got["label"]
    weights = [r["score_llmaaa_weight"] for r in annotated if r["tag_sent"] is not None]
    assert weights and all(w >= 0 for w in weights)
    # each batch's weights sum to its size (uniform = 1), or to 0 when no annotation helped the gold rows
    assert sum(weights) <= len(weights) + 1e-6
    for r in out:
        assert r["llmaaa_predicted"] in labels and r["score_llmaaa_confidence"] >= 0.5
