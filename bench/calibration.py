"""How well each scorer, run with the embedded SmolLM2-135M, agrees with GPT-4's preferences on the
AlpacaEval pool (AUC of the score against "GPT-4 preferred this model's answer over text-davinci-003's").

    python -m bench.calibration [--n 120]

The 135M model is weak: expect AUCs near 0.5 for its judgements. The table is there to show how far a
scorer can be trusted and what pointing it at a bigger model (`backend: openai` / `vllm`) should buy.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import textwrap
import time
from pathlib import Path

from bench.common import SHARED
from dataflywheel.engine.local import LocalExecutor
from dataflywheel.evaluate.calibrate import calibrate
from dataflywheel.recipe.validate import validate_file

SCORES = [
    "score_response_words",
    "score_response_truncated",
    "score_response_refusal",
    "score_ifd",
    "score_alpagasus",
    "score_alpagasus_expected",
    "score_deita_quality",
    "score_deita",
]


def pool(n: int, seed: int = 0) -> list[dict]:
    rows = []
    for f in sorted((SHARED / "alpaca_eval" / "annotations_alpaca_eval_gpt4").glob("*.json")):
        for r in json.loads(f.read_text()):
            if r["preference"] in ("1", "2", 1, 2, 1.0, 2.0) and r["output_2"].strip():
                rows.append(
                    {
                        "instruction": r["instruction"],
                        "output": r["output_2"][:1500],
                        "generator": r["generator_2"],
                        "preference": int(float(r["preference"])),
                    }
                )
    random.Random(seed).shuffle(rows)
    return rows[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=120)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="calib-"))
    rows = pool(args.n)
    (work / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "r.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: calibration
        inputs: [{path: pool.jsonl}]
        shard_size: 40
        models:
          smol: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu, cache: off}
        steps:
          - text_stats: {fields: [response]}
          - truncation: {}
          - refusal: {}
          - ifd: {model: smol}
          - alpagasus: {model: smol, max_tokens: 8}
          - alpagasus: {model: smol, mode: expected, name: alpagasus_expected}
          - deita: {model: smol}
    """)
    )
    rec, ops, problems = validate_file(work / "r.yaml")
    assert not problems, problems
    start = time.perf_counter()
    result = LocalExecutor(rec, ops, work / "run", progress=False).run()
    seconds = time.perf_counter() - start
    out = [json.loads(x) for x in result.output_path.read_text().splitlines()]
    positives = sum(r["preference"] == 2 for r in out)
    print(
        f"{len(out)} AlpacaEval answers (12 models), {positives} preferred by GPT-4 over text-davinci-003; "
        f"scored in {seconds:.0f} s with SmolLM2-135M on CPU"
    )
    print(f"{'score':28} {'rows':>5} {'AUC':>6} {'Spearman':>9} {'best thr':>9} {'accuracy':>9}")
    for col in SCORES:
        c = calibrate([r.get(col) for r in out], [r["preference"] for r in out], positive="2")
        print(f"{col:28} {c.n:5d} {c.auc:6.3f} {c.spearman:9.3f} {c.threshold:9.3g} {c.accuracy:9.3f}")
    print(f"(majority-class accuracy: {max(positives, len(out) - positives) / len(out):.3f})")


if __name__ == "__main__":
    main()
