"""MinHash near-dedup: dataflywheel against datasketch's MinHash + MinHashLSH used record by record (as
Data-Juicer does), same shingles (word 5-grams, lowercased), num_perm=128, threshold 0.8.

Data: documents spliced from sentences of the AlpacaEval pool (all 12 models' responses and
text-davinci-003's), plus injected near-duplicates (a few word edits of a random document). Truth is the
injected pairs whose exact shingle Jaccard is >= the threshold. Recall: true pairs that end in one
cluster. Precision: dropped rows that belong to a true pair.

    python -m bench.minhash_dedup [--rows 100000] [--dup-fraction 0.1]
    python -m bench.minhash_dedup --rows 1000000 --ours-only     # peak memory at 1M rows
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import time

import numpy as np

from bench.common import SHARED
from dataflywheel.lib import minhash

WORD = re.compile(r"[^\W]+")
N, THRESHOLD, PERM = 5, 0.8, 128


def shingles(text: str) -> set[str]:
    w = WORD.findall(text.lower())
    return {" ".join(w[i : i + N]) for i in range(max(len(w) - N + 1, 1))} if w else set()


def build(rows: int, dup_fraction: float, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    rng = random.Random(seed)
    sentences = set()
    for f in sorted((SHARED / "alpaca_eval" / "annotations_alpaca_eval_gpt4").glob("*.json")):
        for r in json.loads(f.read_text()):
            for key in ("output_1", "output_2"):
                sentences.update(s.strip() for s in re.split(r"(?<=[.!?])\s+", r[key]) if len(s.split()) >= 6)
    pool = sorted(sentences)
    n_dup = int(rows * dup_fraction)
    docs = [" ".join(rng.sample(pool, rng.randint(3, 6))) for _ in range(rows - n_dup)]
    pairs = []
    for _ in range(n_dup):
        k = rng.randrange(len(docs))
        w = docs[k].split()
        for _ in range(max(1, len(w) // rng.choice((40, 60, 100)))):
            op, i = rng.random(), rng.randrange(len(w))
            if op < 0.4:
                w[i] = rng.choice(pool).split()[0]
            elif op < 0.7 and len(w) > 8:
                del w[i]
            else:
                w.insert(i, rng.choice(pool).split()[-1])
        pairs.append((len(docs), k))
        docs.append(" ".join(w))
    order = list(range(len(docs)))
    rng.shuffle(order)
    where = {old: new for new, old in enumerate(order)}
    return [docs[i] for i in order], [(where[a], where[b]) for a, b in pairs]


def true_pairs(docs, pairs) -> list[tuple[int, int]]:
    out = []
    for a, b in pairs:
        x, y = shingles(docs[a]), shingles(docs[b])
        if x and len(x & y) / len(x | y) >= THRESHOLD:
            out.append((a, b))
    return out


def ours(docs) -> np.ndarray:
    labels, _, info = minhash.near_duplicate_clusters(docs, THRESHOLD, PERM, N, "word")
    print(f"  dataflywheel LSH: {info}")
    return labels


def datasketch_reference(docs) -> np.ndarray:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=PERM)
    hashes = []
    for i, d in enumerate(docs):
        m = MinHash(num_perm=PERM)
        m.update_batch([s.encode() for s in shingles(d)])
        lsh.insert(i, m)
        hashes.append(m)
    parent = list(range(len(docs)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in enumerate(hashes):
        for j in lsh.query(m):
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(len(docs))])


def score(labels: np.ndarray, truth: list[tuple[int, int]]) -> tuple[float, float, int]:
    n = len(labels)
    first = {}
    for i, c in enumerate(labels.tolist()):
        first.setdefault(c, i)
    dropped = [i for i in range(n) if first[labels[i]] != i]
    in_pair = {x for p in truth for x in p}
    recall = sum(labels[a] == labels[b] for a, b in truth) / max(len(truth), 1)
    precision = sum(i in in_pair for i in dropped) / max(len(dropped), 1)
    return recall, precision, len(dropped)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dup-fraction", type=float, default=0.1)
    ap.add_argument("--ours-only", action="store_true")
    args = ap.parse_args()
    docs, pairs = build(args.rows, args.dup_fraction)
    truth = true_pairs(docs, pairs)
    print(
        f"{len(docs):,} documents, {len(pairs):,} injected near-duplicates, {len(truth):,} with Jaccard >= "
        f"{THRESHOLD}; word {N}-grams, num_perm {PERM}"
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    mine = ours(docs)
    t_ours = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r, p, d = score(mine, truth)
    print(f"{'':14} {'seconds':>8} {'rows/s':>9} {'recall':>7} {'precision':>9} {'dropped':>8}")
    print(f"{'dataflywheel':14} {t_ours:8.1f} {len(docs) / t_ours:9,.0f} {r:7.3f} {p:9.3f} {d:8,}")
    print(f"peak RSS {rss:,.0f} MiB (data alone: {rss_before:,.0f} MiB)")
    if args.ours_only:
        return
    start = time.perf_counter()
    ref = datasketch_reference(docs)
    t_ref = time.perf_counter() - start
    r2, p2, d2 = score(ref, truth)
    print(f"{'datasketch':14} {t_ref:8.1f} {len(docs) / t_ref:9,.0f} {r2:7.3f} {p2:9.3f} {d2:8,}")
    print(
        f"speed-up: {t_ref / t_ours:.1f}x (target >= 5x); recall {r:.3f} vs {r2:.3f} (target >= 0.95), "
        f"precision {p:.3f} vs {p2:.3f}"
    )


if __name__ == "__main__":
    main()
