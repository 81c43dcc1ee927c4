"""SynPO end to end on the real SmolLM2: the prompter and the improver are LoRA-tuned from the base, the
pairs step writes prompts from sampled keywords, checks them, drafts with the policy, rewrites with the
improver and keeps the pairs that pass the gap, and DPO trains the policy on them. The judge's prompt
scores and the policy's drafts are recomputed with separate calls to the base model. The prompt check is
off: the 135M judge puts more mass on "No" than on "Yes" for every request, clear or garbled (measured on
seven; the check is tested with a scripted judge)."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import run_recipe


@pytest.mark.slow
def test_synpo_round_on_smollm2(tmp_path, shared_data, smollm2):
    from dataflywheel.models.base import Sampling
    from dataflywheel.ops.evolve.self_reward import SCORES, judge_prompt
    from dataflywheel.ops.parsing import expected_score
    from dataflywheel.ops.synthesize.synpo import keywords_of

    refs = json.loads(
        (shared_data / "alpaca_eval" / "reference_outputs" / "text_davinci_003.json").read_text()
    )
    seeds = [r for r in refs if len(r["output"]) < 300][:6]
    with open(tmp_path / "seeds.jsonl", "w") as f:
        for i, r in enumerate(seeds):
            f.write(
                json.dumps({"id": f"seed{i}", "instruction": r["instruction"], "output": r["output"]}) + "\n"
            )
    model = "{backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}"
    tune = "max_steps: 2, batch_size: 2, lr: 0.001, warmup_ratio: 0, lora_r: 4"
    result, manifest = run_recipe(
        tmp_path,
        f"""
        version: 1
        name: synpo
        inputs: [{{path: seeds.jsonl}}]
        models: {{policy: {model}, base: {model}}}
        steps:
          - synpo_prompter: {{model: base, output_model: prompter, {tune}}}
          - loop:
              iterations: 1
              data: initial
              steps:
                - synpo_improver: {{model: base, policy: policy, output_model: improver,
                                    max_tokens: 32, {tune}}}
                - synpo_pairs: {{model: policy, prompter: prompter, improver: improver, prompts: 6,
                                 max_tokens: 32, gap: 0, seed: 3, check_prompts: false}}
                - dpo: {{model: policy, output_model: policy, max_steps: 1, batch_size: 2}}
        output: {{path: pairs.jsonl}}
        """,
    )
    steps = {s["op"]: s for s in manifest["steps"]}
    assert steps["synpo_prompter"]["stats"]["train"]["examples"] == 6
    assert steps["synpo_improver"]["stats"]["train"]["examples"] == 6
    counts = steps["synpo_pairs"]["stats"]["counts"]
    dropped = sum(
        counts.get(k, 0)
        for k in (
            "prompt_unusable",
            "prompt_rejected",
            "prompt_check_unreadable",
            "no_response",
            "no_rewrite",
        )
        + ("unscored", "gap_too_small")
    )
    assert counts["pairs"] + dropped == 6  # every synthetic prompt is a pair or a counted drop
    assert steps["dpo"]["stats"]["train"]["pairs"] == counts["pairs"] >= 1
    pairs = [json.loads(x) for x in open(result.output_path)]
    assert len(pairs) == counts["pairs"]
    pool = {w for r in seeds for w in keywords_of(r["instruction"])}
    for row in pairs:
        q = row["prompt"][0]["content"]
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert set(row["synpo_keywords"].split(", ")) <= pool and row["parents"]
        assert row["origin"] == "synpo_pairs" and row["iteration"] == 1
        # the models that made the row, the improver by its round-1 checkpoint
        assert set(row["origin_model"].split(",")) == {"improver@1", "policy", "prompter"}
        # the rejected response is the policy's greedy draft
        (draft,) = smollm2.chat([[{"role": "user", "content": q}]], Sampling(max_tokens=32))
        assert rejected == draft.completions[0].text.strip()
        # the scores, recomputed
        lps = smollm2.next_token_logprobs(
            [judge_prompt(q, chosen, "expected"), judge_prompt(q, rejected, "expected")], SCORES
        )
        s_w, s_y = (expected_score(lp, range(6)) for lp in lps)
        assert row["synpo_scores"] == pytest.approx([s_w, s_y], abs=1e-4)
        assert math.isclose(row["score_synpo_gap"], s_w - s_y, abs_tol=1e-4) and s_w >= s_y - 1e-6
