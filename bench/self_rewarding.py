"""Self-Rewarding's curve: M1 -> M2 -> M3 (Yuan et al., 2024) as a loop, in one run.

Each round the policy samples --n responses to each of --prompts AlpacaEval instructions, judges them
with the additive 5-point prompt (``self_reward``), trains with DPO (beta 0.1) on the best / worst pairs,
and the trained policy is measured: its judge's agreement with GPT-4's preferences on --pairs AlpacaEval
annotations (text-davinci-003 against Alpaca-7B), and the held-out NLL of text-davinci-003's answers to
--heldout other instructions. Round 0 is the untuned model measured the same way.

    python -m bench.self_rewarding [--prompts 16] [--n 4] [--rounds 2] [--pairs 40] [--heldout 16]
    python -m bench.self_rewarding --policy "{backend: vllm, model: /models/llama-3-8b}" --judge-mode generate

--judge-mode expected (default) reads the score from the judge's next-token distribution over "0".."5"
(SmolLM2-135M never ends a judgement on "Score: k"); generate is the paper's sampled judgements.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import MODEL, SHARED, alpaca_eval_pairs, peak_rss_mib, run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--heldout", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--judge-mode", default="expected", choices=["expected", "generate"])
    ap.add_argument("--policy", default=MODEL)
    args = ap.parse_args()
    annotations = SHARED / "alpaca_eval" / "annotations_alpaca_eval_gpt4" / "alpaca-7b.json"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-self-rewarding-") as tmp:
        folder = Path(tmp)
        rows = alpaca_eval_pairs(400)
        prompts, heldout = rows[200 : 200 + args.prompts], rows[300 : 300 + args.heldout]
        (folder / "prompts.jsonl").write_text(
            "".join(json.dumps({"instruction": q}) + "\n" for q, _ in prompts)
        )
        (folder / "heldout.jsonl").write_text(
            "".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in heldout)
        )
        judge = f"judge_agreement: {{model: policy, data: '{annotations}', limit: {args.pairs}, " + (
            f"judge_mode: {args.judge_mode}}}"
        )
        _, manifest, seconds = run(
            folder,
            "self-rewarding",
            f"""
            version: 1
            name: self-rewarding
            inputs: [{{path: prompts.jsonl}}]
            models: {{policy: {args.policy}}}
            steps:
              - {judge}
              - eval_nll: {{model: policy, data: heldout.jsonl}}
              - loop:
                  iterations: {args.rounds}
                  steps:
                    - self_reward: {{model: policy, n: {args.n}, max_tokens: {args.max_tokens},
                                    judge_mode: {args.judge_mode}}}
                    - dpo: {{model: policy, output_model: policy, beta: 0.1, lr: 0.00005, batch_size: 4}}
                    - {judge}
                    - eval_nll: {{model: policy, data: heldout.jsonl}}
            output: {{path: out.jsonl}}
            """,
        )
    steps = manifest["steps"]
    head = f"Self-Rewarding, {args.prompts} prompts x {args.n} responses, judge {args.judge_mode}"
    print(f"{head}: {seconds:.0f} s")
    print("round  pairs  ties  too-few  unparsed  agreement  decided  ties(judge)  held-out NLL  round s")
    agreement0 = steps[1]["stats"]["metrics"]
    nll0 = steps[2]["stats"]["metrics"]
    print(
        f"{0:>5}  {'-':>5}  {'-':>4}  {'-':>7}  {'-':>8}  {agreement0['agreement']:>9.3f}  "
        f"{agreement0['decided']:>7}  {agreement0['ties']:>11}  {nll0['nll']:>12.4f}  {'-':>7}"
    )
    for it in range(1, args.rounds + 1):
        inner = [s for s in steps if s.get("iteration") == it]
        reward = next(s for s in inner if s["op"] == "self_reward")["stats"]["counts"]
        agree = next(s for s in inner if s["op"] == "judge_agreement")["stats"]["metrics"]
        nll = next(s for s in inner if s["op"] == "eval_nll")["stats"]["metrics"]
        spent = sum(s["seconds"] for s in inner)
        print(
            f"{it:>5}  {reward.get('pairs', 0):>5}  {reward.get('tie', 0):>4}  "
            f"{reward.get('too_few_scored', 0):>7}  "
            f"{reward.get('unparsed', 0):>8}  {agree['agreement']:>9.3f}  {agree['decided']:>7}  "
            f"{agree['ties']:>11}  {nll['nll']:>12.4f}  {spent:>7.0f}"
        )
    print(f"peak RSS {peak_rss_mib():.0f} MiB, wall {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
