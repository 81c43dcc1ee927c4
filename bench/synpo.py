"""SynPO's curve (Dong et al., ICLR 2025): the prompter trained once, then per iteration an improver, the
synthetic pairs and DPO from the policy the iteration started with, in one run.

Seeds: --seeds AlpacaEval instructions with text-davinci-003's answers as the gold responses. The prompter
(keywords + one noise keyword -> the seed prompt) is LoRA-tuned once from the base; each iteration the
improver is tuned from the base to rewrite the current policy's answers to the seed prompts into the gold
answers, the prompter writes --prompts prompts from keywords sampled from the seeds, the policy answers them
(rejected), the improver rewrites the answers (chosen), the judge (the base model, Self-Rewarding's additive
5-point prompt, expected score) scores both and the pair is kept when the rewrite scores at least --gap
higher; DPO (beta 0.1) trains the next policy on the pairs. Measured after every iteration: held-out NLL of
text-davinci-003's answers to --heldout other instructions; iteration 0 is the untuned policy.

    python -m bench.synpo [--seeds 32] [--prompts 32] [--iterations 2] [--gap 0.5] [--heldout 16]
    python -m bench.synpo --policy "{backend: vllm, model: /models/llama-3-8b-sft}" --check-prompts

The prompt check (the judge's next-token Yes against No) is off by default: the 135M judge puts more mass on
"No" for every request, clear or garbled (tests/ops/synthesize/test_synpo_real.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from bench.common import MODEL, alpaca_eval_pairs, peak_rss_mib, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--gap", type=float, default=0.5)
    ap.add_argument("--heldout", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--policy", default=MODEL)
    ap.add_argument("--check-prompts", action="store_true")
    ap.add_argument(
        "--judge-mode", default="expected", choices=["expected", "generate"],
        help="generate: sampled judgements read as 'Score: k' (under the op's shape where the model can)",
    )  # fmt: skip
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    ap.add_argument("--report-only", action="store_true", help="print the table of the run kept in --keep")
    args = ap.parse_args()
    start = time.perf_counter()
    if args.report_only:
        return report(args.keep, args, float("nan"))
    with tempfile.TemporaryDirectory(prefix="bench-synpo-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows = alpaca_eval_pairs(500)
        seeds = [(q, a) for q, a in rows[:300] if len(a) < 600][: args.seeds]
        heldout = rows[300 : 300 + args.heldout]
        (folder / "seeds.jsonl").write_text(
            "".join(
                json.dumps({"id": f"seed{i}", "instruction": q, "output": a}) + "\n"
                for i, (q, a) in enumerate(seeds)
            )
        )
        (folder / "heldout.jsonl").write_text(
            "".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in heldout)
        )
        check = "true" if args.check_prompts else "false"
        _, _, seconds = run(
            folder,
            "synpo",
            f"""
            version: 1
            name: synpo
            inputs: [{{path: seeds.jsonl}}]
            models: {{policy: {args.policy}, base: {args.policy}}}
            steps:
              - eval_nll: {{model: policy, data: heldout.jsonl}}
              - synpo_prompter: {{model: base, output_model: prompter, epochs: 2, batch_size: 4, lr: 0.0005}}
              - loop:
                  iterations: {args.iterations}
                  data: initial
                  steps:
                    - synpo_improver: {{model: base, policy: policy, output_model: improver,
                                        max_tokens: {args.max_tokens}, epochs: 2, batch_size: 4, lr: 0.0005}}
                    - synpo_pairs: {{model: policy, prompter: prompter, improver: improver, judge: base,
                                     prompts: {args.prompts}, max_tokens: {args.max_tokens}, gap: {args.gap},
                                     check_prompts: {check}, judge_mode: {args.judge_mode}}}
                    - dpo: {{model: policy, output_model: policy, beta: 0.1, lr: 0.00005, batch_size: 4}}
                    - eval_nll: {{model: policy, data: heldout.jsonl}}
            output: {{path: pairs.jsonl}}
            """,
        )
        report(folder, args, seconds)
    print(f"peak RSS {peak_rss_mib():.0f} MiB, wall {time.perf_counter() - start:.0f} s")


def report(folder: Path, args: argparse.Namespace, seconds: float) -> None:
    manifest = json.loads((folder / "synpo" / "manifest.json").read_text())
    steps = manifest["steps"]
    scores = {  # per iteration: (chosen, rejected) judge scores of the kept pairs
        s["iteration"]: [
            tuple(x)
            for f in sorted((folder / "synpo" / s["dir"]).glob("shard-*.parquet"))
            for x in pq.read_table(f, columns=["synpo_scores"]).column(0).to_pylist()
        ]
        for s in steps
        if s["op"] == "synpo_pairs"
    }
    prompter = next(s for s in steps if s["op"] == "synpo_prompter")
    print(
        f"SynPO, {args.seeds} seeds, {args.prompts} prompts an iteration, gap {args.gap}: {seconds:.0f} s "
        f"(prompter {prompter['seconds']:.0f} s, final loss {prompter['stats']['train']['losses'][-1]:.3f})"
    )
    untuned = next(s for s in steps if s["op"] == "eval_nll")["stats"]["metrics"]["nll"]
    head = ("iter", "written", "unusable", "no rewrite", "unscored", "gap <", "pairs", "chosen", "rejected")
    head += ("last margin", "held-out NLL", "s")
    print("  ".join(f"{h:>8}" for h in head))
    print("  ".join(f"{v:>8}" for v in [0] + ["-"] * 9 + [f"{untuned:.4f}", "-"]))
    for it in range(1, args.iterations + 1):
        inner = [s for s in steps if s.get("iteration") == it]
        counts = next(s for s in inner if s["op"] == "synpo_pairs")["stats"]["counts"]
        dpo = next(s for s in inner if s["op"] == "dpo")["stats"]["train"]
        nll = next(s for s in inner if s["op"] == "eval_nll")["stats"]["metrics"]["nll"]
        kept = scores[it]
        chosen = statistics.fmean(c for c, _ in kept) if kept else float("nan")
        rejected = statistics.fmean(r for _, r in kept) if kept else float("nan")
        margins = dpo.get("reward_margins") or [float("nan")]
        row = [it, args.prompts - counts.get("prompt_unusable", 0)]
        row += [
            counts.get(k, 0) for k in ("prompt_unusable", "no_rewrite", "unscored", "gap_too_small", "pairs")
        ]
        row += [f"{chosen:.2f}", f"{rejected:.2f}", f"{margins[-1]:.3f}", f"{nll:.4f}"]
        row += [f"{sum(s['seconds'] for s in inner):.0f}"]
        print("  ".join(f"{v:>8}" for v in row))
    for it in range(1, args.iterations + 1):
        gaps = sorted(c - r for c, r in scores[it])
        if gaps:
            q = [gaps[round(f * (len(gaps) - 1))] for f in (0, 0.25, 0.5, 0.75, 1)]
            print(
                f"iteration {it}: gaps of the kept pairs min/q1/median/q3/max "
                + " / ".join(f"{g:.2f}" for g in q)
                + f"; >= 0.25: {sum(g >= 0.25 for g in gaps)}, >= 0.5: {sum(g >= 0.5 for g in gaps)}"
            )


if __name__ == "__main__":
    main()
