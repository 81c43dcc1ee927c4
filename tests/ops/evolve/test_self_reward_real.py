"""Self-Rewarding's data step with the real SmolLM2: responses are sampled per prompt and judged under the
"Score: k" shape (free justification, then the score line), every judgement is read, and the scores and
pairs are recomputed from separate calls to the same model; and the loop with the expected-score judge."""

import json

import numpy as np
import pytest

from dataflywheel.models.base import Sampling
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
def test_self_reward_reads_every_judgement_and_pairs_equal_separate_calls(tmp_path, smollm2):
    from dataflywheel.ops.evolve.self_reward import judge_prompt, judge_score
    from dataflywheel.ops.parsing import labelled_score_shape

    prompts = ["Name three primary colors.", "What is 12 times 3?", "Give a synonym for happy."]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"instruction": p}) + "\n" for p in prompts))
    step = "self_reward: {model: policy, n: 2, judgements: 2, max_tokens: 24, judge_max_tokens: 48, seed: 7}"
    result, manifest = recipe(tmp_path, [step])
    out = [json.loads(x) for x in open(result.output_path)]
    counts = manifest["steps"][-1]["stats"]["counts"]
    assert counts["requests"] == 3 + 3 * 2  # one sampling request per prompt, one judging per response
    assert counts.get("unparsed", 0) == 0 and counts.get("failed", 0) == 0  # every judgement was read
    assert len(out) == 3 and all(len(r["self_reward_responses"]) == 2 for r in out)
    assert counts.get("pairs", 0) >= 1  # the defining step: preference pairs were built

    # the judgements again, as the op asked them: one batch, n=2 seeded samples per response
    flat = [(r, resp) for r in out for resp in r["self_reward_responses"]]
    convs = [judge_prompt(r["messages"][0]["content"], resp, "generate") for r, resp in flat]
    shaped = Sampling(
        temperature=0.7,
        top_p=0.9,
        max_tokens=48,
        n=2,
        seed=7,
        constraint=labelled_score_shape("Score", 0, 5, 48),
    )
    again = []
    for reply in smollm2.chat(convs, shaped):
        got = [judge_score(c.text) for c in reply.completions]
        assert None not in got
        again.append(float(np.mean([g["score"] for g in got])))
    assert [s for r in out for s in r["self_reward_scores"]] == pytest.approx(again)
    for row in out:
        scores, responses = row["self_reward_scores"], row["self_reward_responses"]
        if scores[0] == scores[1]:
            assert row["chosen"] is None and row["error_self_reward"].startswith("tie")
            continue
        best, worst = (0, 1) if scores[0] > scores[1] else (1, 0)
        assert row["chosen"][0]["content"] == responses[best]
        assert row["rejected"][0]["content"] == responses[worst]
        assert row["score_self_reward_margin"] == pytest.approx(abs(scores[0] - scores[1]))


@pytest.mark.slow
def test_self_rewarding_loop_with_the_expected_score_judge(tmp_path, smollm2, shared_data):
    """M1 -> M2 -> M3 with SmolLM2 judging by its next-token distribution over "0".."5": pairs are made
    and trained on each round, and the judge's agreement with GPT-4 is measured each round. Round 1's
    scores and agreement are recomputed with separate calls to the base model."""
    from dataflywheel.engine.runinfo import load_manifest
    from dataflywheel.ops.evolve.self_reward import SCORES, judge_prompt
    from dataflywheel.ops.parsing import expected_score

    prompts = ["Name three primary colors.", "Give a synonym for happy."]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"instruction": p}) + "\n" for p in prompts))
    annotations = shared_data / "alpaca_eval" / "annotations_alpaca_eval_gpt4" / "alpaca-7b.json"
    body = f"""
        version: 1
        name: self-rewarding
        inputs: [{{path: prompts.jsonl}}]
        models:
          policy: {{backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}}
        steps:
          - loop:
              iterations: 2
              steps:
                - self_reward: {{model: policy, n: 2, max_tokens: 24, judge_mode: expected}}
                - dpo: {{model: policy, output_model: policy, max_steps: 1, batch_size: 2, lr: 0.0005}}
                - judge_agreement: {{model: policy, data: '{annotations}', limit: 3, judge_mode: expected}}
        output: {{path: out.jsonl}}
    """
    run_recipe(tmp_path, body)
    manifest = load_manifest(tmp_path / "run")
    inner = [s for s in manifest["steps"] if s.get("iteration")]
    rewards = [s for s in inner if s["op"] == "self_reward"]
    trained = [s for s in inner if s["op"] == "dpo"]
    assert [s["iteration"] for s in trained] == [1, 2]
    assert all(s["stats"]["train"]["pairs"] >= 1 for s in trained)  # expected scores rarely tie
    assert all(s["stats"]["counts"].get("unparsed", 0) == 0 for s in rewards)
    curve = manifest["steps"][-1]["stats"]["curve"]
    assert len(curve) == 2 and all(p["judge_agreement.pairs"] == 3 for p in curve)

    # round 1 judged with the base model: recompute its scores and its agreement
    import pyarrow.parquet as pq

    first = next(s for s in rewards if s["iteration"] == 1)
    table = pq.read_table(sorted((tmp_path / "run" / first["dir"]).glob("shard-*.parquet")))
    for row in table.to_pylist():
        question = row["messages"][0]["content"]
        convs = [judge_prompt(question, r, "expected") for r in row["self_reward_responses"]]
        again = [expected_score(lps, range(6)) for lps in smollm2.next_token_logprobs(convs, SCORES)]
        assert row["self_reward_scores"] == pytest.approx(again, abs=1e-4)
    rows = json.loads(annotations.read_text())
    pairs = [r for r in rows if str(r["preference"]) in ("1", "2")][:3]
    agree = decided = 0
    for r in pairs:
        good, bad = (
            (r["output_1"], r["output_2"]) if str(r["preference"]) == "1" else (r["output_2"], r["output_1"])
        )
        lps = smollm2.next_token_logprobs(
            [
                judge_prompt(r["instruction"], good, "expected"),
                judge_prompt(r["instruction"], bad, "expected"),
            ],
            SCORES,
        )
        s_good, s_bad = (expected_score(lp, range(6)) for lp in lps)
        decided += s_good != s_bad
        agree += s_good > s_bad
    assert curve[0]["judge_agreement.decided"] == decided
    assert curve[0]["judge_agreement.agreement"] == pytest.approx(agree / decided, abs=1e-4)
