"""Self-Rewarding's data step with the real SmolLM2 (a smoke test): responses are sampled per prompt and
judged; a 135M judge rarely ends on "Score: k" within 32 tokens, and every such judgement is counted as
unparsed, never read as a score; a following dpo step then stops with a clear error instead of training on
nothing."""

import json

import pytest

from dataflywheel.errors import FlywheelError
from tests.conftest import run_recipe


def recipe(tmp_path, steps: list[str], run: str = "run"):
    model = "{backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}"
    lines = [
        "version: 1",
        "name: self-reward",
        "inputs: [{path: prompts.jsonl}]",
        f"models: {{policy: {model}}}",
        "steps:",
        *(f"  - {step}" for step in steps),
        "output: {path: out.jsonl}",
    ]
    return run_recipe(tmp_path, "\n".join(lines) + "\n", run=run)


@pytest.mark.slow
def test_self_reward_samples_judges_and_counts(tmp_path):
    prompts = ["Name three primary colors.", "What is 12 times 3?", "Give a synonym for happy."]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"instruction": p}) + "\n" for p in prompts))
    step = "self_reward: {model: policy, n: 2, judgements: 2, max_tokens: 32, judge_max_tokens: 32}"
    result, manifest = recipe(tmp_path, [step])
    out = [json.loads(x) for x in open(result.output_path)]
    counts = manifest["steps"][-1]["stats"]["counts"]
    assert (
        counts["requests"] == 3 + 3 * 2
    )  # one sampling request per prompt, one judging request per response
    unscored = 0
    for row in out:
        assert len(row["self_reward_responses"]) == 2 and all(row["self_reward_responses"])
        assert len(row["self_reward_scores"]) == 2
        unscored += sum(s is None for s in row["self_reward_scores"])
        if row["chosen"] is None:
            assert row["error_self_reward"].startswith(("tie", "0 of 2", "1 of 2"))
        else:
            assert row["score_self_reward_margin"] > 0
    assert counts["unparsed"] >= unscored  # an unscored response had only unreadable judgements
    if not any(r["chosen"] for r in out):
        with pytest.raises(FlywheelError, match="none of the 3 rows has a preference pair"):
            recipe(tmp_path, [step, "dpo: {model: policy, output_model: p2, max_steps: 1}"], "run2")
