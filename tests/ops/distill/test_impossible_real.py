"""recipes/impossible.yaml on the real SmolLM2: every pair it kept passes each critic when recomputed
independently (ROUGE-L with the ``rouge_score`` package, the judge's P(Yes) from a direct forward pass),
and the self-distillation rows come from the stage-0 rows' sources."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from dataflywheel.ops import prompts
from dataflywheel.ops.distill import impossible as I


def _rows(run_dir: Path, step: dict) -> list[dict]:
    return pq.read_table(sorted(Path(run_dir / step["dir"]).glob("shard-*.parquet"))).to_pylist()


def _p_yes(model, premise: str, hypothesis: str) -> float:
    template = prompts.load(I.__file__, "impossible_entail.txt")
    conv = [{"role": "user", "content": prompts.fill(template, premise=premise, hypothesis=hypothesis)}]
    tok = model.tokenizer
    ids = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]
    with torch.no_grad():
        logits = model.model(torch.tensor([ids])).logits[0, -1].float()
    yes, no = (logits.log_softmax(-1)[tok.encode(w, add_special_tokens=False)[0]] for w in ("Yes", "No"))
    return torch.sigmoid(yes - no).item()


@pytest.mark.slow
def test_impossible_recipe_on_smollm2(shipped_runs, smollm2):
    from rouge_score import rouge_scorer

    run_dir, result = shipped_runs["impossible"]
    assert result.exit_code == 0, result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    steps = manifest["steps"]
    contexts = {r["id"] for r in _rows(run_dir, steps[0])}
    ops = ["impossible_pairs", "filter", "sft", "impossible_refine", "filter", "sft"]
    assert [s["op"] for s in steps[1:]] == ops
    pairs = _rows(run_dir, steps[2])  # the generator's rows after the contexts are filtered out
    refined = _rows(run_dir, steps[5])
    assert steps[2]["dropped"] == {"origin not in ['impossible_pairs']": len(contexts)}
    stats = steps[1]["stats"]["counts"]
    assert pairs and stats["pairs"] == len(pairs) and stats["candidates"] >= 2
    assert sum(v for k, v in stats.items() if k.startswith("dropped: ")) > 0
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for r in pairs:
        source, target = r[I.SOURCE], r["messages"][1]["content"]
        assert r["parents"][0] in contexts and r["origin"] == "impossible_pairs"
        assert I.first_sentence(source) == source and I.first_sentence(target) == target
        assert 0.8 * len(source) <= len(target) <= 1.5 * len(source)
        assert I.numbers(source) == I.numbers(target)
        rouge = scorer.score(source, target)["rougeL"].fmeasure
        assert r["impossible_rouge_l"] == pytest.approx(rouge) and rouge <= 0.75
        assert r["impossible_nli"] == pytest.approx(_p_yes(smollm2, source, target), abs=2e-3)
        assert r["impossible_reverse_nli"] == pytest.approx(_p_yes(smollm2, target, source), abs=2e-3)
        assert min(r["impossible_nli"], r["impossible_reverse_nli"]) >= 0.15
    by_id = {r["id"]: r for r in pairs}
    assert refined
    for r in refined:
        parent = by_id[r["parents"][0]]
        assert r[I.SOURCE] == parent[I.SOURCE] and r["origin_model"] == "paraphraser,teacher"
        assert r["impossible_rouge_l"] <= 0.75
    sft = [s for s in steps if s["op"] == "sft"]  # each trained on what its filter kept
    assert [s["stats"]["train"]["examples"] for s in sft] == [len(pairs), len(refined)]
