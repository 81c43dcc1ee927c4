"""Benchmark Self-Evolving on GSM8K items with the real SmolLM2 as generator and verifier, constrained to the
shapes the op reads ("Question: ... Answer: ... #### n", then the verifier's "Judgement: yes|no"): every
generation and every verdict is read, and each kept item's verdict is recomputed with a separate call."""

import json

import pytest

from tests.conftest import run_recipe


@pytest.mark.slow
def test_evolve_eval_on_gsm8k_reads_every_item_and_verdict(tmp_path, shared_data, smollm2):
    from dataflywheel.evaluate.tasks import gsm8k_answer
    from dataflywheel.models.base import Sampling
    from dataflywheel.ops import prompts
    from dataflywheel.ops.evolve import evolve_eval
    from dataflywheel.ops.evolve.evolve_eval import judgement_shape, parse_judgement

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
                          max_tokens: 48}
        output: {path: evolved.jsonl}
        """,
    )
    made = [json.loads(x) for x in open(result.output_path)]
    counts = manifest["steps"][-1]["stats"]["counts"]
    kept = sum(v for k, v in counts.items() if k.startswith("made:"))
    rejected = sum(v for k, v in counts.items() if k.startswith("rejected:"))
    # the defining steps happened for every job: 4 items generated and read, 4 verdicts read
    assert counts.get("unparsed", 0) == 0 and counts.get("unverified", 0) == 0
    assert kept + rejected == 4 and counts["requests"] == 4 + 4
    assert len(made) == kept
    template = prompts.load(evolve_eval.__file__, "evolve_eval_verify.txt")
    for r in made:
        assert r["parents"][0] in {"g0", "g1"} and r["evolve_op"] in {"paraphrase", "reverse_polarity"}
        question, solution = r["messages"][0]["content"], r["messages"][1]["content"]
        final = gsm8k_answer(solution)
        assert final is not None  # every kept item has a final number
        ask = prompts.fill(template, question=question, final=f"{final:g}")
        (verdict,) = smollm2.chat(
            [[{"role": "user", "content": ask}]], Sampling(max_tokens=48, constraint=judgement_shape(48))
        )
        assert parse_judgement(verdict.text) == {"ok": True}  # kept because its verifier said yes


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
          - evolve_eval: {model: lm, operations: [paraphrase, planning], prefilter: false, max_tokens: 48,
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
    assert set(groups) - {"original"}, "no evolved item was kept"  # the defining step made rows
    answers = smollm2.chat([S.prompt_of(r["messages"]) for r in out], Sampling(max_tokens=32))
    hits = {}
    for r, a in zip(out, answers, strict=True):
        ref, text = r["messages"][-1]["content"], a.completions[0].text
        hit = gsm8k_correct(text, ref) if "####" in ref else choice_letter(text) == choice_letter(ref)
        hits.setdefault(r.get("evolve_op") or "original", []).append(float(hit))
    for name, group in hits.items():
        assert metrics[f"rows:{name}"] == len(groups[name])
        assert metrics[f"accuracy:{name}"] == pytest.approx(sum(group) / len(group), abs=1e-4)
