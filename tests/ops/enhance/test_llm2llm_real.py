"""LLM2LLM as a recipe loop on GSM8K with the real SmolLM2 (student LoRA-tuned from the base model each
round, teacher the base model): the set grows only from seed rows, round by round, with accuracy in the
loop's curve."""

import json
import textwrap

import pytest

from dataflywheel.engine.local import LocalExecutor
from dataflywheel.recipe.validate import validate_file


@pytest.mark.slow
def test_llm2llm_loop_on_gsm8k(tmp_path, shared_data):
    train = (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[:4]
    test = (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:2]
    for name, lines in (("seeds.jsonl", train), ("heldout.jsonl", test)):
        rows = [json.loads(x) for x in lines]
        (tmp_path / name).write_text(
            "".join(json.dumps({"instruction": r["question"], "output": r["answer"]}) + "\n" for r in rows)
        )
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: llm2llm
        inputs: [{path: seeds.jsonl}]
        models: {base: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}}
        steps:
          - loop:
              iterations: 2
              steps:
                - sft: {model: base, output_model: student, max_steps: 1, batch_size: 2, lora_r: 4,
                        warmup_ratio: 0}
                - llm2llm: {model: base, student: student, max_tokens: 64, student_max_tokens: 32}
                - eval_accuracy: {model: student, data: heldout.jsonl, task: gsm8k, max_tokens: 32}
        """)
    )
    recipe, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems, problems
    result = LocalExecutor(recipe, ops, tmp_path / "run", progress=False).run()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    steps = [s for s in manifest["steps"] if s["op"] == "llm2llm"]
    assert [s["iteration"] for s in steps] == [1, 2]
    for s in steps:  # every round asks about the 4 seeds only, never the rows it added
        assert s["stats"]["counts"]["seeds"] == 4
    added = [s["stats"]["counts"].get("problems_added", 0) for s in steps]
    for s in steps:  # the defining step: a new problem for every seed the student got wrong, each read
        counts = s["stats"]["counts"]
        assert counts["seeds_wrong"] >= 1 and counts.get("problem_unread", 0) == 0
        assert counts["problems_added"] == counts["seeds_wrong"]
    assert steps[0]["rows_out"] == 4 + added[0] and steps[1]["rows_out"] == 4 + added[0] + added[1]
    rows = [json.loads(line) for line in open(result.output_path)]
    seeds = {r["id"] for r in rows if not r["parents"]}
    assert len(seeds) == 4 and all(set(r["parents"]) <= seeds for r in rows)
    made = [r for r in rows if r["parents"]]
    assert len(made) == sum(added)
    for r in made:  # each new problem as the parser reads it: a clean question, an answer ending "#### n"
        question, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        assert question[0].isalnum() and "\n" not in question
        assert answer.rsplit("####", 1)[1].strip().lstrip("-").isdigit()
    curve = next(s for s in manifest["steps"] if s["op"] == "loop")["stats"]["curve"]
    assert [c["rows"] for c in curve] == [steps[0]["rows_out"], steps[1]["rows_out"]]
    assert all("eval_accuracy.accuracy" in c for c in curve)
