"""The flywheel recipe's value curve over iterations, larger than the shipped short version.

recipes/flywheel.yaml with its counts raised: Self-Instruct grows --seeds of the paper's 175 human seed
tasks (../shared/data/self_instruct) with --prompts requests per iteration, a frozen judge grades every
(task, answer) (AlpaGasus, expected score), the best --keep are kept and the policy is LoRA-tuned on them;
each tuned policy is measured on --heldout AlpacaEval instructions: the NLL of text-davinci-003's answers,
and a frozen judge's pairwise preference between its greedy answers and those of the policy it replaced
(policy@previous; both orders, letters from the judge's next-token distribution). Iteration 0 is the
untuned policy's NLL.

    python -m bench.flywheel [--iterations 3] [--prompts 8] [--keep 12] [--heldout 16]
    python -m bench.flywheel --policy "{backend: vllm, model: /models/llama-3-8b}" \\
        --judge "{backend: openai, model: gpt-4o-mini}" --verdict generate
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import MODEL, ROOT, SHARED, alpaca_eval_pairs, peak_rss_mib, run


def recipe(args, folder: Path) -> str:
    """The shipped recipe, its counts and models replaced by the arguments (its steps unchanged)."""
    spec = yaml.safe_load((ROOT / "recipes" / "flywheel.yaml").read_text())
    spec["inputs"] = [{"path": str(folder / "seeds.jsonl"), "name": "seeds"}]
    spec["models"] = {"policy": yaml.safe_load(args.policy), "judge": yaml.safe_load(args.judge)}
    loop = spec["steps"][0]["loop"]
    loop["iterations"] = args.iterations
    for step in loop["steps"]:
        ((op, params),) = step.items()
        if op == "self_instruct":
            params["prompts_per_round"] = args.prompts
        elif op == "head":
            params["n"] = args.keep
        elif op in ("eval_nll", "eval_judge"):
            params["data"] = str(folder / "heldout.jsonl")
            params.pop("limit", None)
        if op == "eval_judge":
            params["verdict"] = args.verdict
            params["max_tokens"] = args.max_tokens
            if args.judge_max_tokens:
                params["judge_max_tokens"] = args.judge_max_tokens
    spec["steps"].insert(0, {"eval_nll": {"model": "policy", "data": str(folder / "heldout.jsonl")}})
    spec["output"] = {"path": "out.jsonl"}
    return yaml.safe_dump(spec, sort_keys=False)


def mean_score(step_dir: Path) -> float:
    import pyarrow.parquet as pq

    scores = pq.read_table(sorted(step_dir.glob("shard-*.parquet")), columns=["score_alpagasus"])
    values = [v for v in scores.column(0).to_pylist() if v is not None]
    return sum(values) / len(values) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=175)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--keep", type=int, default=12)
    ap.add_argument("--heldout", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--verdict", default="logprobs", choices=["logprobs", "generate"])
    ap.add_argument("--judge-max-tokens", type=int, default=None, help="generate: the judge's reply budget")
    ap.add_argument("--policy", default=MODEL)
    ap.add_argument("--judge", default=MODEL)
    args = ap.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-flywheel-") as tmp:
        folder = Path(tmp)
        seeds = (SHARED / "self_instruct" / "seed_tasks.jsonl").read_text().splitlines()[: args.seeds]
        (folder / "seeds.jsonl").write_text("\n".join(seeds) + "\n")
        heldout = alpaca_eval_pairs(400)[300 : 300 + args.heldout]
        (folder / "heldout.jsonl").write_text(
            "".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in heldout)
        )
        _, manifest, seconds = run(folder, "flywheel", recipe(args, folder))
        steps = manifest["steps"]
        print(
            f"flywheel: {args.iterations} iterations, {args.prompts} Self-Instruct requests each, best "
            f"{args.keep} kept, {args.heldout} held-out AlpacaEval prompts: {seconds:.0f} s"
        )
        print(
            "iter  made  kept  score made  score kept  held-out NLL  win rate    W/T/L  preference  tokens  "
            "round s"
        )
        print(
            f"{0:>4}  {'-':>4}  {'-':>4}  {'-':>10}  {'-':>10}  {steps[1]['stats']['metrics']['nll']:>12.4f}"
        )
        for point in steps[-1]["stats"]["curve"]:
            it = point["iteration"]
            inner = {s["op"]: s for s in steps if s.get("iteration") == it}
            judge = inner["eval_judge"]["stats"]["metrics"]
            made = mean_score(folder / "flywheel" / inner["alpagasus"]["dir"])
            kept = mean_score(folder / "flywheel" / inner["head"]["dir"])
            wtl = f"{judge['wins']}/{judge['ties']}/{judge['losses']}"
            preference = judge.get("preference", float("nan"))
            print(
                f"{it:>4}  {inner['alpagasus']['rows_out']:>4}  {point['rows']:>4}  {made:>10.3f}  "
                f"{kept:>10.3f}  {point['eval_nll.nll']:>12.4f}  {judge['win_rate']:>8.3f}  {wtl:>7}  "
                f"{preference:>10.4f}  {point['tokens']:>6}  {point['seconds']:>7.0f}"
            )
    print(f"peak RSS {peak_rss_mib():.0f} MiB, wall {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
