"""LLM2LLM's measured effect: accuracy and set size per round of the loop on GSM8K, round 1 being plain
fine-tuning on the seeds (nothing added yet), in one run.

Seeds: the first --seeds GSM8K training problems (the paper: 1% of the training set). Each round LoRA-tunes
the student from the base model on the current set, the student answers the seeds, the teacher (the same
base model here; any recipe model spec by --teacher) writes one new problem per wrong seed, and the
student is measured on the first --test GSM8K test problems (greedy, final number).

    python -m bench.llm2llm [--seeds 32] [--test 32] [--rounds 3] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import MODEL, SHARED, peak_rss_mib, run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--test", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--teacher", default=MODEL)
    args = ap.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-llm2llm-") as tmp:
        folder = Path(tmp)
        for name, src, n in (("seeds", "train", args.seeds), ("heldout", "test", args.test)):
            rows = [json.loads(x) for x in (SHARED / "gsm8k" / f"{src}.jsonl").read_text().splitlines()[:n]]
            (folder / f"{name}.jsonl").write_text(
                "".join(
                    json.dumps({"instruction": r["question"], "output": r["answer"]}) + "\n" for r in rows
                )
            )
        _, manifest, seconds = run(
            folder,
            "llm2llm",
            f"""
            version: 1
            name: llm2llm
            inputs: [{{path: seeds.jsonl}}]
            models: {{base: {MODEL}, teacher: {args.teacher}}}
            steps:
              - loop:
                  iterations: {args.rounds}
                  steps:
                    - sft: {{model: base, output_model: student, epochs: {args.epochs}, batch_size: 8,
                             lora_r: 16}}
                    - eval_accuracy: {{model: student, data: heldout.jsonl, task: gsm8k,
                                      max_tokens: {args.max_tokens}}}
                    - llm2llm: {{model: teacher, student: student, max_tokens: {args.max_tokens},
                                student_max_tokens: {args.max_tokens}}}
        """,
        )
    loop = next(s for s in manifest["steps"] if s["op"] == "loop")
    added = [s["stats"]["counts"] for s in manifest["steps"] if s["op"] == "llm2llm"]
    print(
        f"GSM8K: {args.seeds} seeds, {args.test} test problems, SmolLM2 student (LoRA), {args.rounds} rounds"
    )
    print(f"{'round':>5} {'train rows':>10} {'test acc':>8} {'ci95':>16} {'wrong seeds':>11} {'added':>5}")
    rows = []
    for i, point in enumerate(loop["stats"]["curve"]):
        c = added[i] if i < len(added) else {}
        acc = point.get("eval_accuracy.accuracy")
        ci = point.get("eval_accuracy.ci95")
        trained_on = args.seeds + sum(a.get("problems_added", 0) for a in added[:i])
        rows.append({"round": i + 1, "train_rows": trained_on, "accuracy": acc, "ci95": ci,
                     "wrong_seeds": c.get("seeds_wrong"), "added": c.get("problems_added", 0)})  # fmt: skip
        wrong, new = c.get("seeds_wrong"), c.get("problems_added", 0)
        print(f"{i + 1:>5} {trained_on:>10} {acc:>8} {ci!s:>16} {wrong!s:>11} {new:>5}")
    print(json.dumps(rows))
    total = time.perf_counter() - start
    print(f"{seconds:.0f} s in the loop, {total:.0f} s in all, peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
