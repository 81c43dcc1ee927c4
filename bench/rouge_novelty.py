"""The Self-Instruct novelty filter (ROUGE-L > 0.7 against every instruction so far means "not new"):
dataflywheel's pool (lib/rouge.py) against the loop the Self-Instruct code runs, ``rouge_score``'s
``_score_lcs`` of the candidate against every pooled instruction (pre-tokenized, mapped over a
``multiprocessing.Pool`` of ``--workers`` processes as in ``bootstrap_instructions.py``).

The pool is built from ``--n`` real instructions (GSM8K, AlpacaEval, Self-Instruct seeds and
user-oriented tasks, IFEval, MT-bench; one in ten is a lightly edited copy of an earlier one, so some are
rejected). dataflywheel runs the whole sequence; the reference runs the last ``--check`` candidates
against the same pool (the full reference run at 10,000 would take hours), and both must take the same
decisions and find the same highest score for every checked candidate.

    python -m bench.rouge_novelty [--n 10000] [--check 200] [--workers 2]   (--workers 0: in-process loop)
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from functools import partial
from multiprocessing import Pool

from bench.common import SHARED, peak_rss_mib
from dataflywheel.lib.rouge import RougePool


def instructions(n: int, seed: int = 0) -> list[str]:
    texts = [json.loads(line)["question"] for line in open(SHARED / "gsm8k" / "train.jsonl")]
    texts += [
        r["instruction"]
        for r in json.loads(
            (SHARED / "alpaca_eval" / "reference_outputs" / "text_davinci_003.json").read_text()
        )
    ]
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        texts += [json.loads(line)["instruction"] for line in open(SHARED / "self_instruct" / name)]
    texts += [json.loads(line)["prompt"] for line in open(SHARED / "ifeval" / "input_data.jsonl")]
    texts += [
        t for line in open(SHARED / "mt_bench" / "mt_bench_question.jsonl") for t in json.loads(line)["turns"]
    ]
    for path in sorted((SHARED / "mmlu_test" / "test").glob("*.csv")):
        if len(texts) >= n:
            break
        texts += [row[0] for row in csv.reader(open(path, encoding="utf-8"))]
    rng = random.Random(seed)
    rng.shuffle(texts)
    out: list[str] = []
    for t in texts:
        if len(out) >= n:
            break
        if out and rng.random() < 0.1:  # a light edit of an earlier instruction
            words = rng.choice(out).split()
            words.insert(rng.randrange(len(words) + 1), rng.choice(["please", "briefly", "now", "also"]))
            out.append(" ".join(words))
        else:
            out.append(t)
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--check", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from rouge_score import rouge_scorer

    texts = instructions(args.n)
    split = len(texts) - args.check

    start = time.perf_counter()
    pool = RougePool(0.7)
    for t in texts[:split]:
        if pool.is_novel(t):
            pool.add(t)
    t_build = time.perf_counter() - start
    start = time.perf_counter()
    ours = [pool.nearest(t) for t in texts[split:]]
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    exact = [pool.nearest(t, exact=True) for t in texts[split:]]
    t_exact = time.perf_counter() - start

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pooled_tokens = [scorer._tokenizer.tokenize(t) for t in pool.texts]
    start = time.perf_counter()
    ref = []
    if args.workers:
        with Pool(args.workers) as workers:
            for t in texts[split:]:
                new = scorer._tokenizer.tokenize(t)
                scores = workers.map(partial(rouge_scorer._score_lcs, new), pooled_tokens)
                ref.append(max(s.fmeasure for s in scores))
    else:  # the same loop in this process
        for t in texts[split:]:
            new = scorer._tokenizer.tokenize(t)
            ref.append(max(rouge_scorer._score_lcs(new, p).fmeasure for p in pooled_tokens))
    t_ref = time.perf_counter() - start

    same = all((o.score > 0.7) == (r > 0.7) for o, r in zip(ours, ref, strict=True))
    same_best = all(o.score == r for o, r in zip(ours, ref, strict=True) if r > 0.7)
    same_exact = all(e.score == r for e, r in zip(exact, ref, strict=True))
    rejected = sum(r > 0.7 for r in ref)
    print(
        f"pool of {len(pool):,} instructions (built from {split:,}, {split - len(pool):,} rejected) "
        f"in {t_build:.1f} s"
    )
    print(f"{args.check} candidates against it ({rejected} not new):")
    how = f"Pool({args.workers})" if args.workers else "in-process"
    print(f"  rouge_score loop, {how} (ref) {t_ref:8.2f} s  ({t_ref / args.check * 1e3:.1f} ms each)")
    print(f"  dataflywheel, decision          {t_ours:8.3f} s  ({t_ours / args.check * 1e3:.2f} ms each)")
    print(f"  dataflywheel, exact maximum     {t_exact:8.3f} s  ({t_exact / args.check * 1e3:.2f} ms each)")
    print(
        f"identical decisions: {same}; identical scores above 0.7: {same_best}; identical maxima (exact): "
        f"{same_exact}; speed-up {t_ref / t_ours:.0f}x decision, {t_ref / t_exact:.0f}x exact "
        "(target >= 20x); "
        f"peak RSS {peak_rss_mib():,.0f} MiB"
    )
    assert same and same_best and same_exact


if __name__ == "__main__":
    main()
