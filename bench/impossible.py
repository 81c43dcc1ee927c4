"""Impossible Distillation's stage 0 on the embedded SmolLM2, and how well its entailment critic judges.

1. The critic: the LLM critic (``impossible_entail.txt``, P(Yes) over {Yes, No}) on hand-written pairs
   of four kinds (the same sentence, a paraphrase, an unrelated sentence, a contradiction): the mean
   P(Yes) per kind and the AUC of paraphrases (and identical pairs) against the rest. A critic that
   cannot separate them makes the entailment filter a lottery; the paper's NLI model is the reference.
2. The funnel: ``impossible_pairs`` over the 16 example news openings with --samples continuations each
   (--max-tokens), at the paper's threshold 0.75 and at the recipe's 0.15: candidates, pairs, and what
   each critic removed.

    python -m bench.impossible [--samples 16] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import json
import time

from bench.common import ROOT, peak_rss_mib

PAIRS = [
    ("same", "The bridge will close for repairs next week.", "The bridge will close for repairs next week."),
    (
        "same",
        "Farmers lost much of the potato harvest to frost.",
        "Farmers lost much of the potato harvest to frost.",
    ),
    (
        "paraphrase",
        "The city council approved the budget on Tuesday.",
        "On Tuesday, the budget was approved by the city council.",
    ),
    ("paraphrase", "Heavy rain flooded the town overnight.", "The town was flooded by heavy overnight rain."),
    (
        "paraphrase",
        "The museum reopened after a long renovation.",
        "After a lengthy renovation, the museum opened again.",
    ),
    (
        "paraphrase",
        "Most new cars sold last month were electric.",
        "Last month, electric cars made up most new sales.",
    ),
    (
        "unrelated",
        "The bridge will close for repairs next week.",
        "A bakery won an award for its rice bread.",
    ),
    ("unrelated", "The city council approved the budget on Tuesday.", "The mayor resigned after a scandal."),
    (
        "unrelated",
        "The museum reopened after a long renovation.",
        "Volunteers cleaned the beaches on Saturday.",
    ),
    ("unrelated", "Heavy rain flooded the town overnight.", "Engineers tested a new tram line."),
    ("contradiction", "Heavy rain flooded the town overnight.", "The town had a dry and sunny night."),
    (
        "contradiction",
        "The museum reopened after a long renovation.",
        "The museum remains closed for renovation.",
    ),
]


def auc(pos: list[float], neg: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()

    from dataflywheel.data import io
    from dataflywheel.data import schema as S
    from dataflywheel.models import embedded
    from dataflywheel.models.client import Model
    from dataflywheel.ops.base import OpContext
    from dataflywheel.ops.distill import impossible as I
    from dataflywheel.recipe.models import ModelSpec

    start = time.perf_counter()
    model = Model("teacher", ModelSpec(backend="hf", model=embedded.SMOLLM2, device="cpu"))
    ctx = OpContext(models={"teacher": model})
    op = I.ImpossiblePairs({"model": "teacher"}, ctx=ctx)
    entail = I.llm_entailment(op, "teacher")
    scores = entail([a for _, a, _ in PAIRS], [b for _, _, b in PAIRS])
    print("the embedded judge as the entailment critic, P(Yes) per kind of pair:")
    kinds = ["same", "paraphrase", "unrelated", "contradiction"]
    for kind in kinds:
        s = [x for (k, _, _), x in zip(PAIRS, scores, strict=True) if k == kind]
        print(f"  {kind:14s} n={len(s)}  mean {sum(s) / len(s):.3f}  range {min(s):.3f}-{max(s):.3f}")
    pos = [x for (k, _, _), x in zip(PAIRS, scores, strict=True) if k in ("same", "paraphrase")]
    neg = [x for (k, _, _), x in zip(PAIRS, scores, strict=True) if k not in ("same", "paraphrase")]
    print(f"  AUC (same or paraphrase against unrelated or contradiction): {auc(pos, neg):.3f}")

    rows = [json.loads(line) for line in (ROOT / "examples" / "news_contexts.jsonl").open()]
    seeds = io.rows_to_table(
        [
            {S.ID: f"c{i}", S.MESSAGES: [{"role": "user", "content": r["instruction"]}]}
            for i, r in enumerate(rows)
        ]
    )
    for threshold in (0.75, 0.15):
        op = I.ImpossiblePairs(
            {
                "model": "teacher",
                "samples": args.samples,
                "max_tokens": args.max_tokens,
                "entailment": threshold,
            },
            ctx=ctx,
        )
        t0 = time.perf_counter()
        made = list(op.generate(seeds))
        counts = dict(sorted(op.stats.items()))
        seconds = time.perf_counter() - t0
        print(
            f"\nimpossible_pairs, entailment >= {threshold}: {len(rows)} contexts x {args.samples} samples,"
        )
        print(f"  {len(made)} pairs in {seconds:.0f} s")
        for k, v in counts.items():
            print(f"  {k:32s} {v}")
        for r in made[:3]:
            print(f"  e.g. {r[I.SOURCE]!r}\n    -> {r['messages'][1]['content']!r}")
    print(f"\npeak RSS {peak_rss_mib():.0f} MiB; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
