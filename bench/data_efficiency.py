"""The data-efficiency experiment on real data: what does a 10% selection buy against the whole pool?

    python -m bench.data_efficiency [--pool 2000] [--heldout 60] [--judge-rows 40] [--out DIR]

Pool: instruction-response pairs from AlpacaEval (805 instructions answered by 12 models, from alpaca-7b to
GPT-4, plus text-davinci-003): mixed quality by construction. Held out: instructions that never appear in
the pool, with GPT-4 Turbo's reference answers. SmolLM2-135M-Instruct is LoRA-trained with the same
settings on the full pool, a random 10%, and each selector's 10%, then evaluated by the NLL of the reference
answers and by pairwise judge win rate against the references (both orders). The default judge is the
embedded SmolLM2, which does not produce the "[[A]]"/"[[B]]" verdict format (48 of 48 verdicts unparsed on
the base model, so every pair ties): on CPU pass --no-judge, and give the compare spec a real judge (an
OpenAI-compatible server or vLLM) for win rates.

Selectors (each an ordinary recipe, so every run directory has its report.html):
  random_10     a seeded random 10%
  longest_10    the longest responses (the "Long Is More" baseline)
  kcenter_10    k-center greedy over MiniLM embeddings (diversity)
  ifd_10        the highest Instruction-Following Difficulty below 1 (Cherry LLM)
  alpagasus_10  the highest expected AlpaGasus grade from SmolLM2
  gpt4pref_10   a random 10% of the pairs GPT-4 preferred over text-davinci-003 (an oracle, for scale)

Every step is checkpointed: a killed run picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import random
import textwrap
import time
from pathlib import Path

import yaml

from bench.common import ROOT, SHARED
from dataflywheel.engine.local import LocalExecutor
from dataflywheel.experiments.compare import run_compare
from dataflywheel.recipe.validate import validate_file

BASE = '{backend: hf, model: "embedded:smollm2-135m-instruct", device: cpu}'
EMBEDDER = '{backend: sentence-transformers, model: "embedded:all-minilm-l6-v2", device: cpu}'


def build_data(work: Path, n_pool: int, n_heldout: int, seed: int = 0) -> tuple[Path, Path]:
    ae = SHARED / "alpaca_eval"
    instructions = sorted(
        {
            r["instruction"]
            for r in json.loads((ae / "reference_outputs" / "gpt4_1106_preview.json").read_text())
        }
    )
    rng = random.Random(seed)
    rng.shuffle(instructions)
    held = set(instructions[:n_heldout])
    refs = {
        r["instruction"]: r["output"]
        for r in json.loads((ae / "reference_outputs" / "gpt4_1106_preview.json").read_text())
    }
    heldout = [{"instruction": i, "output": refs[i][:1500]} for i in instructions[:n_heldout]]
    pool, seen = [], set()
    for f in sorted((ae / "annotations_alpaca_eval_gpt4").glob("*.json")):
        for r in json.loads(f.read_text()):
            if r["instruction"] in held or not (r.get("output_2") or "").strip():
                continue
            pref = r.get("preference")
            row = {
                "instruction": r["instruction"],
                "output": r["output_2"][:1500],
                "generator": r["generator_2"],
                "gpt4_preferred": int(pref is not None and float(pref) == 2.0),
            }
            key = (row["instruction"], row["output"])
            if key not in seen:
                seen.add(key)
                pool.append(row)
    for r in json.loads((ae / "reference_outputs" / "text_davinci_003.json").read_text()):
        if r["instruction"] not in held and (r["instruction"], r["output"][:1500]) not in seen:
            pool.append(
                {
                    "instruction": r["instruction"],
                    "output": r["output"][:1500],
                    "generator": "text_davinci_003",
                    "gpt4_preferred": 0,
                }
            )
    rng.shuffle(pool)
    pool = pool[:n_pool]
    (work / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (work / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in heldout))
    return work / "pool.jsonl", work / "heldout.jsonl"


SELECTORS = {
    "random_10": "- sample: {{k: {k}}}",
    "longest_10": """
        - text_stats: {{fields: [response]}}
        - sort: {{by: score_response_words, descending: true}}
        - head: {{n: {k}}}""",
    "kcenter_10": """
        - embed: {{model: embedder, field: conversation, name: minilm}}
        - kcenter_select: {{column: embedding_minilm, k: {k}}}""",
    "ifd_10": """
        - ifd: {{model: base}}
        - filter: {{column: score_ifd, max: 1.0}}
        - sort: {{by: score_ifd, descending: true}}
        - head: {{n: {k}}}""",
    "alpagasus_10": """
        - alpagasus: {{model: base, mode: expected}}
        - sort: {{by: score_alpagasus, descending: true}}
        - head: {{n: {k}}}""",
    "gpt4pref_10": """
        - filter: {{column: gpt4_preferred, equals: 1}}
        - sample: {{k: {k}}}""",
}


def select(work: Path, pool: Path, name: str, k: int) -> tuple[Path, float]:
    steps = textwrap.dedent(SELECTORS[name].format(k=k)).strip()
    recipe = work / f"select_{name}.yaml"
    recipe.write_text(
        f"version: 1\nname: {name}\ninputs: [{{path: {pool}}}]\nshard_size: 256\nseed: 0\n"
        f"models:\n  base: {BASE}\n  embedder: {EMBEDDER}\n"
        f"steps:\n{textwrap.indent(steps, '  ')}\noutput: {{path: selected.jsonl}}\n"
    )
    rec, ops, problems = validate_file(recipe)
    assert not problems, problems
    start = time.perf_counter()
    result = LocalExecutor(rec, ops, work / "select" / name, progress=False).run()
    return result.output_path, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", type=int, default=2000)
    ap.add_argument("--heldout", type=int, default=60)
    ap.add_argument("--judge-rows", type=int, default=40)
    ap.add_argument("--fraction", type=float, default=0.10)
    ap.add_argument("--selectors", default=",".join(SELECTORS))
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-efficiency"))
    ap.add_argument("--no-judge", action="store_true")
    args = ap.parse_args()
    work = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    pool, heldout = build_data(work, args.pool, args.heldout)
    k = round(args.fraction * args.pool)
    candidates, select_seconds = {"full": str(pool)}, {}
    for name in args.selectors.split(","):
        path, seconds = select(work, pool, name, k)
        candidates[name] = str(path)
        select_seconds[name] = round(seconds, 1)
        print(f"selected {name}: {seconds:.0f} s", flush=True)
    spec = {
        "version": 1,
        "name": "data-efficiency",
        "base": yaml.safe_load(BASE),
        "eval": {
            "data": str(heldout),
            "max_tokens": 192,
            "judge_limit": args.judge_rows,
            "judge_max_tokens": 96,
        },
        "train": {"epochs": args.epochs, "batch_size": 8, "lr": 5e-4, "lora_r": 16},
        "candidates": candidates,
        "seed": 0,
    }
    if not args.no_judge:
        spec["judge"] = yaml.safe_load(BASE)
    (work / "compare.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    start = time.perf_counter()
    results = run_compare(work / "compare.yaml", work / "compare")
    print(f"compare: {time.perf_counter() - start:.0f} s")
    print(
        f"\npool {args.pool} pairs, {k} per selection; held-out {args.heldout} (judge on {args.judge_rows})"
    )
    print("| candidate | rows | reference NLL | perplexity | judge win rate (95% CI) | selection s |")
    print("|---|---:|---:|---:|---|---:|")
    for r in results:
        ci = r["win_rate_ci95"]
        win = f"{r['win_rate']:.3f} ({ci[0]:.2f}-{ci[1]:.2f})" if r["win_rate"] is not None else "n/a"
        sel = select_seconds.get(r["candidate"], "")
        print(f"| {r['candidate']} | {r['rows']} | {r['nll']:.4f} | {r['perplexity']:.2f} | {win} | {sel} |")
    print(f"\nreport: {work / 'compare' / 'report.html'}")


if __name__ == "__main__":
    main()
