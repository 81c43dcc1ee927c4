"""Synthetic oversampling through the engine with the real SmolLM2: shown examples, and the paper's setting
(a generator LoRA-tuned on the rows with the group first, asked with the group's name only)."""

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import run_recipe

ROOT = Path(__file__).resolve().parents[3]
MODEL = "{backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}"


def run(folder: Path, name: str, body: str):
    return run_recipe(folder, body, name=name, run=name)


def seeds(folder: Path) -> dict[str, str]:
    rows = [json.loads(x) for x in (ROOT / "examples" / "sentiment.jsonl").read_text().splitlines()]
    pos = [r for r in rows if r["label"] == "positive"][:6]
    neg = [r for r in rows if r["label"] == "negative"][:2]
    with open(folder / "seeds.jsonl", "w") as f:
        for i, r in enumerate(pos + neg):
            f.write(json.dumps({"id": f"s{i}", "instruction": r["text"], "tag_label": r["label"]}) + "\n")
    return {f"s{i}": r["text"] for i, r in enumerate(pos + neg)}


def check_balanced(result, manifest, texts, examples: int):
    rows = [json.loads(x) for x in open(result.output_path)]
    new = [r for r in rows if r.get("oversample_group")]
    counts = manifest["steps"][-1]["stats"]["counts"]
    short = counts.get("short:negative", 0)
    assert len(new) + short == 4 and new, counts  # 6 positive, 2 negative: 4 negatives needed
    assert Counter(r["tag_label"] for r in rows) == {"positive": 6, "negative": 6 - short}
    neg_ids = {"s6", "s7"}
    for r in new:
        assert r["tag_label"] == "negative" and r["origin"] == "oversample"
        assert set(r["parents"]) <= neg_ids and len(r["parents"]) == min(examples, 2)
        assert r["messages"][0]["content"].strip().lower() not in {t.lower() for t in texts.values()}
    assert len({r["messages"][0]["content"] for r in new}) == len(new)


@pytest.mark.slow
def test_oversample_with_examples(tmp_path):
    texts = seeds(tmp_path)
    result, manifest = run(tmp_path, "fewshot", f"""
        version: 1
        name: oversample
        inputs: [{{path: seeds.jsonl}}]
        models: {{lm: {MODEL}}}
        steps:
          - oversample: {{model: lm, column: tag_label, examples: 2, max_tokens: 32, max_attempts: 4}}
        output: {{path: out.jsonl}}
    """)  # fmt: skip
    check_balanced(result, manifest, texts, examples=2)


@pytest.mark.slow
def test_oversample_from_a_generator_tuned_on_the_groups(tmp_path):
    texts = seeds(tmp_path)
    result, _ = run(tmp_path, "gen", f"""
        version: 1
        name: generator
        inputs: [{{path: seeds.jsonl}}]
        models: {{base: {MODEL}}}
        steps:
          - group_conditioned: {{column: tag_label}}
          - sft: {{model: base, output_model: generator, max_steps: 2, batch_size: 4, lora_r: 4,
                   warmup_ratio: 0}}
    """)  # fmt: skip
    ckpt = next((tmp_path / "gen").glob("steps/*/checkpoint"))
    result, manifest = run(tmp_path, "tuned", f"""
        version: 1
        name: oversample
        inputs: [{{path: seeds.jsonl}}]
        models: {{gen: {{backend: hf, model: '{ckpt}', device: cpu}}}}
        steps:
          - oversample: {{model: gen, column: tag_label, examples: 0, max_tokens: 32, max_attempts: 4}}
        output: {{path: out.jsonl}}
    """)  # fmt: skip
    check_balanced(result, manifest, texts, examples=0)
