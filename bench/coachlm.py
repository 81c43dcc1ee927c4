"""CoachLM's measured effect: SFT on coach-revised rows against SFT on the raw rows, same steps, held-out NLL.

1. Coach: AlpacaEval GPT-4 annotations of vicuna-13b against text-davinci-003 (instructions 0-399) read as
   preference pairs; `coach_pairs`; the 30% with the largest edit distance (at most --coach-rows); LoRA SFT
   of SmolLM2 (the paper's recipe at CPU scale).
2. Pool: alpaca-7b's answers to AlpacaEval instructions 400-400+--pool (weak answers, disjoint from the
   coach's instructions); the coach revises them (`coachlm`, greedy).
3. Students: SmolLM2 LoRA-tuned on the raw pool and on the revised pool, same steps and settings;
   held-out NLL of GPT-4-turbo's answers to instructions 700-731 (lower is better).

    python -m bench.coachlm [--coach-rows 96] [--pool 48]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.common import MODEL, SHARED, peak_rss_mib, run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--coach-rows", type=int, default=96)
    ap.add_argument("--pool", type=int, default=48)
    args = ap.parse_args()
    annotations = SHARED / "alpaca_eval" / "annotations_alpaca_eval_gpt4"
    weak = json.loads((annotations / "alpaca-7b.json").read_text())
    gpt4 = json.loads((SHARED / "alpaca_eval" / "reference_outputs" / "gpt4_1106_preview.json").read_text())
    with tempfile.TemporaryDirectory(prefix="bench-coachlm-") as tmp:
        folder = Path(tmp)
        pairs = json.loads((annotations / "vicuna-13b.json").read_text())[:400]
        (folder / "pairs.json").write_text(json.dumps(pairs))
        pool = [
            {"instruction": r["instruction"], "output": r["output_2"]} for r in weak[400 : 400 + args.pool]
        ]
        (folder / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
        held = [{"instruction": r["instruction"], "output": r["output"]} for r in gpt4[700:732]]
        (folder / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))

        _, coach, t_coach = run(folder, "coach", f"""
            version: 1
            name: coach
            inputs: [{{path: pairs.json}}]
            on_error: skip
            models: {{base: {MODEL}}}
            steps:
              - coach_pairs: {{}}
              - sort: {{by: score_coach_edit, descending: true}}
              - head: {{fraction: 0.3}}
              - head: {{n: {args.coach_rows}}}
              - sft: {{model: base, output_model: coach, epochs: 1, batch_size: 4, lr: 0.0005, lora_r: 16,
                       max_length: 512}}
            """)  # fmt: skip
        sft_dir = next(s["dir"] for s in coach["steps"] if s["op"] == "sft")
        checkpoint = folder / "coach" / sft_dir / "checkpoint"
        revised, manifest, t_revise = run(folder, "revise", f"""
            version: 1
            name: revise
            inputs: [{{path: pool.jsonl}}]
            models: {{coach: {{backend: hf, model: '{checkpoint}', device: cpu}}}}
            steps:
              - coachlm: {{model: coach, max_tokens: 384}}
            """)  # fmt: skip
        counts = manifest["steps"][1]["stats"]["counts"]
        rows = [json.loads(line) for line in open(revised.output_path)]
        (folder / "revised.jsonl").write_text(
            "".join(json.dumps({"messages": r["messages"]}) + "\n" for r in rows)
        )
        nll = {}
        for name, data in (("raw", "pool.jsonl"), ("revised", "revised.jsonl")):
            _, m, _ = run(folder, f"student_{name}", f"""
                version: 1
                name: student_{name}
                inputs: [{{path: {data}}}]
                models: {{base: {MODEL}}}
                steps:
                  - sft: {{model: base, output_model: student, max_steps: 24, batch_size: 4, lr: 0.0005,
                           lora_r: 16, max_length: 512}}
                  - eval_nll: {{model: student, data: heldout.jsonl}}
                """)  # fmt: skip
            nll[name] = m["steps"][-1]["stats"]["metrics"]["nll"]
        _, base, _ = run(folder, "base", f"""
            version: 1
            name: base
            inputs: [{{path: pool.jsonl}}]
            models: {{base: {MODEL}}}
            steps:
              - eval_nll: {{model: base, data: heldout.jsonl}}
            """)  # fmt: skip
        coach_rows = next(s for s in coach["steps"] if s["op"] == "sft")["rows_in"]
        print(f"coach: {coach_rows} pairs (the most revised 30% of vicuna-13b vs davinci-003, "
              f"GPT-4 preferred), {t_coach:.0f} s")  # fmt: skip
        print(f"revision of {len(rows)} alpaca-7b answers: {counts.get('revised', 0)} revised, "
              f"{counts.get('unparsed', 0)} unparsed, {counts.get('too_long', 0)} too long, "
              f"{t_revise:.0f} s")  # fmt: skip
        print(f"held-out NLL of GPT-4-turbo answers (32 AlpacaEval instructions): base "
              f"{base['steps'][-1]['stats']['metrics']['nll']:.4f}, SFT on raw {nll['raw']:.4f}, "
              f"SFT on revised {nll['revised']:.4f}  (24 steps x 4 rows each)")  # fmt: skip
        delta = nll["revised"] - nll["raw"]
        print(f"revised - raw: {delta:+.4f} nats/token; peak RSS {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
