"""Self-Instruct end to end on the real SmolLM2, through the engine: lineage, the ROUGE-L bound checked
with rouge_score, and a killed step resumed to identical output under seeded sampling."""

import json
import textwrap

import pytest
from rouge_score import rouge_scorer

from dataflywheel.engine.local import LocalExecutor
from dataflywheel.recipe.validate import validate_file


def run(path, run_dir):
    recipe, ops, problems = validate_file(path)
    assert not problems, problems
    return LocalExecutor(recipe, ops, run_dir, progress=False).run()


@pytest.mark.slow
def test_self_instruct_on_smollm2_keeps_the_bound_names_parents_and_resumes(tmp_path, shared_data):
    seeds = (shared_data / "self_instruct" / "seed_tasks.jsonl").read_text().splitlines()[:8]
    (tmp_path / "seeds.jsonl").write_text("\n".join(seeds) + "\n")
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: self-instruct
        inputs: [{path: seeds.jsonl}]
        shard_size: 4
        models: {m: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu, cache: "off"}}
        steps:
          - self_instruct: {model: m, rounds: 1, prompts_per_round: 6, max_tokens: 32,
                            instance_max_tokens: 32, temperature: 0.7, seed: 1, classify: false,
                            keep_seeds: true}
          - rouge_dedup: {column: instruction}
        """)
    )
    first = run(tmp_path / "r.yaml", tmp_path / "run")
    rows = [json.loads(line) for line in open(first.output_path)]
    seed_rows = {r["id"]: r for r in rows if r["origin"] == "seeds"}
    made = [r for r in rows if r["origin"] == "self_instruct"]
    assert len(seed_rows) == 8 and made
    shard_of = {sid: i // 4 for i, sid in enumerate(json.loads(s)["id"] for s in seeds)}
    for r in made:
        assert r["origin_model"] == "m" and r["iteration"] == 0 and r["ops"] == ["self_instruct"]
        assert r["parents"] and {shard_of[p] for p in r["parents"]} == {shard_of[r["parents"][0]]}
        assert r["messages"][0]["content"].startswith(r["instruction"])
        assert r["messages"][-1]["role"] == "assistant" and r["messages"][-1]["content"].strip()
    # the bound, recomputed with rouge_score: within a seed shard every instruction (seeds first, then
    # the kept ones in order) is at most 0.7 from every earlier one
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    for shard in (0, 1):
        texts = [json.loads(s)["instruction"] for s in seeds if shard_of[json.loads(s)["id"]] == shard]
        texts += list(dict.fromkeys(r["instruction"] for r in made if shard_of[r["parents"][0]] == shard))
        for i, text in enumerate(texts):
            best = max((scorer.score(e, text)["rougeL"].fmeasure for e in texts[:i]), default=0.0)
            assert best <= 0.7, text
            if i >= 4:  # its recorded nearest score: the pool also held kept tasks that got no instance
                row = next(r for r in made if r["instruction"] == text)
                assert best - 1e-12 <= row["rouge_l_nearest"] <= 0.7
    step = next((tmp_path / "run" / "steps").glob("01-self_instruct-*"))
    stats = json.loads((tmp_path / "run" / "manifest.json").read_text())["steps"][1]["stats"]["counts"]
    assert stats["requests"] >= 12 and stats["instructions_kept"] >= 1
    # every task list and every instance reply was read (numbered lines; "Input:"/"Output:")
    assert stats.get("unparsed", 0) == 0 and stats.get("instances_unread", 0) == 0

    # killed while generating from the second seed shard: only that shard is made again, identically
    kept_mtime = (step / "shard-00000.parquet").stat().st_mtime_ns
    (step / "_done.json").unlink()
    (step / "shard-00001.parquet").unlink()
    again = run(tmp_path / "r.yaml", tmp_path / "run")
    assert (step / "shard-00000.parquet").stat().st_mtime_ns == kept_mtime
    assert [json.loads(line) for line in open(again.output_path)] == rows
