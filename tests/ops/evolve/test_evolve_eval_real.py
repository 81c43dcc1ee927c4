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
