"""Magpie and its tags end to end on the real SmolLM2: instructions sampled from the pre-query template,
each response equal to SmolLM2's own greedy answer asked directly."""

import json
import textwrap

import pytest

from dataflywheel.engine.local import LocalExecutor
from dataflywheel.models.base import Sampling
from dataflywheel.ops.synthesize.magpie_tag import LABELS
from dataflywheel.recipe.validate import validate_file


@pytest.mark.slow
def test_magpie_on_smollm2(tmp_path, smollm2):
    (tmp_path / "slots.jsonl").write_text(
        "".join(json.dumps({"id": f"slot{i}", "instruction": "(slot)"}) + "\n" for i in range(3))
    )
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: magpie
        inputs: [{path: slots.jsonl}]
        models: {m: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}}
        steps:
          - magpie: {model: m, per_seed: 2, max_tokens: 32, response_max_tokens: 32, seed: 3}
          - magpie_tag: {model: m, tag: difficulty, max_tokens: 48}
        """)
    )
    recipe, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems, problems
    result = LocalExecutor(recipe, ops, tmp_path / "run", progress=False).run()
    rows = [json.loads(line) for line in open(result.output_path)]
    counts = json.loads((tmp_path / "run" / "manifest.json").read_text())["steps"][1]["stats"]["counts"]
    # six slots: each became a row or was counted as dropped
    dropped = sum(
        counts.get(k, 0) for k in ("instruction_empty", "instruction_truncated", "response_missing")
    )
    assert len(rows) + dropped == 6 and rows
    assert counts["requests"] == 1 + len(rows) + counts.get("response_missing", 0)  # one sampling request
    # independent: SmolLM2 asked the instructions directly (one greedy batch, as the op asked them)
    users = [r["messages"][0]["content"] for r in rows]
    assert counts.get("response_missing", 0) == 0
    direct = smollm2.chat([[{"role": "user", "content": u}] for u in users], Sampling(max_tokens=32))
    for r, d in zip(rows, direct, strict=True):
        user, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        assert r["origin"] == "magpie" and r["parents"][0].startswith("slot") and r["origin_model"] == "m"
        assert user.strip() and "\n" not in user  # the paper's early stop at the first newline
        assert answer == d.text.strip()
        tag = r["tag_difficulty"]
        assert (tag in LABELS["difficulty"][1]) == (r["error_difficulty"] is None)
        if tag is not None:
            assert r["score_difficulty"] == LABELS["difficulty"][1].index(tag) + 1
    tag_counts = json.loads((tmp_path / "run" / "manifest.json").read_text())["steps"][2]["stats"]["counts"]
    assert tag_counts["unparsed"] + tag_counts.get("failed", 0) == sum(
        r["tag_difficulty"] is None for r in rows
    )
    # constrained to the prompt's JSON object, every grader reply is read: each row has its label
    assert tag_counts["unparsed"] == 0 and all(r["tag_difficulty"] is not None for r in rows)
