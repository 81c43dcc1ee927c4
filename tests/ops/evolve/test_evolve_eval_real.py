"""Benchmark Self-Evolving on GSM8K items with the real SmolLM2 as generator and verifier (a smoke test: a
135M verifier rarely reaches a "Judgement:" line in 32 tokens). Every job is accounted for: kept,
rejected, unverified, or an unparsed generation; the kept items name their seed and operation."""

import json

import pytest

from tests.conftest import run_recipe


@pytest.mark.slow
def test_evolve_eval_on_gsm8k(tmp_path, shared_data):
    rows = [json.loads(x) for x in (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[:2]]
    with open(tmp_path / "eval.jsonl", "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"id": f"g{i}", "instruction": r["question"], "output": r["answer"]}) + "\n")
    result, manifest = run_recipe(
        tmp_path,
        """
        version: 1
        name: evolve
        inputs: [{path: eval.jsonl}]
        models: {lm: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}}
        steps:
          - evolve_eval: {model: lm, operations: [paraphrase, reverse_polarity], prefilter: false,
                          max_tokens: 32}
        output: {path: evolved.jsonl}
        """,
    )
    made = [json.loads(x) for x in open(result.output_path)]
    counts = manifest["steps"][-1]["stats"]["counts"]
    kept = sum(v for k, v in counts.items() if k.startswith("made:"))
    rejected = sum(v for k, v in counts.items() if k.startswith("rejected:"))
    unparsed_generations = 4 - (kept + rejected + counts.get("unverified", 0))
    assert len(made) == kept and 0 <= unparsed_generations <= counts.get("unparsed", 0)
    assert counts["requests"] == 4 + (4 - unparsed_generations)  # 2 seeds x 2 operations, then verifications
    for r in made:
        assert r["parents"][0] in {"g0", "g1"} and r["evolve_op"] in {"paraphrase", "reverse_polarity"}


@pytest.mark.slow
def test_original_against_evolved_accuracy_table(tmp_path, shared_data, smollm2):
    """Seeds pass through beside their paraphrases and planning probes; eval_accuracy on the rows that
    reach it reports the model's accuracy per kind, recomputed here from separate greedy answers."""
    from dataflywheel.data import schema as S
    from dataflywheel.evaluate.tasks import choice_letter, gsm8k_correct
    from dataflywheel.models.base import Sampling

    rows = [json.loads(x) for x in (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[:2]]
    with open(tmp_path / "eval.jsonl", "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"id": f"g{i}", "instruction": r["question"], "output": r["answer"]}) + "\n")
    result, manifest = run_recipe(
        tmp_path,
        """
        version: 1
        name: evolve
        inputs: [{path: eval.jsonl}]
        models: {lm: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}}
        steps:
          - evolve_eval: {model: lm, operations: [paraphrase, planning], prefilter: false, max_tokens: 32,
                          keep_seeds: true}
          - eval_accuracy: {model: lm, task: auto, by: evolve_op, max_tokens: 32}
        output: {path: evolved.jsonl}
        """,
    )
    out = [json.loads(x) for x in open(result.output_path)]
    metrics = manifest["steps"][-1]["stats"]["metrics"]
    groups = {}
    for r in out:
        groups.setdefault(r.get("evolve_op") or "original", []).append(r)
    assert metrics["rows"] == len(out) and metrics["rows:original"] == 2
    answers = smollm2.chat([S.prompt_of(r["messages"]) for r in out], Sampling(max_tokens=32))
    hits = {}
    for r, a in zip(out, answers, strict=True):
        ref, text = r["messages"][-1]["content"], a.completions[0].text
        hit = gsm8k_correct(text, ref) if "####" in ref else choice_letter(text) == choice_letter(ref)
        hits.setdefault(r.get("evolve_op") or "original", []).append(float(hit))
    for name, group in hits.items():
        assert metrics[f"rows:{name}"] == len(groups[name])
        assert metrics[f"accuracy:{name}"] == pytest.approx(sum(group) / len(group), abs=1e-4)
