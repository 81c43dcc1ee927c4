"""k-center greedy (farthest-first) on n x d embeddings: dataflywheel against a straightforward NumPy loop
that recomputes all distances by broadcasting at every pick. The two selections must be identical.

    python -m bench.kcenter [--n 100000] [--d 384] [--k 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import peak_rss_mib
from dataflywheel.lib.diversity import kcenter_greedy


def reference(x: np.ndarray, k: int, first: int) -> np.ndarray:
    picks = [first]
    best = ((x - x[first]) ** 2).sum(1)
    while len(picks) < k:
        nxt = int(np.argmax(best))
        picks.append(nxt)
        best = np.minimum(best, ((x - x[nxt]) ** 2).sum(1))
    return np.array(picks)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--k", type=int, default=300)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    # sentence-embedding-like data: 200 topics, unit vectors
    centers = rng.normal(size=(200, args.d))
    x = (centers[rng.integers(200, size=args.n)] + 0.6 * rng.normal(size=(args.n, args.d))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    start = time.perf_counter()
    ref = reference(x, args.k, 0)
    t_ref = time.perf_counter() - start
    start = time.perf_counter()
    ours = kcenter_greedy(x, args.k, 0)
    t_ours = time.perf_counter() - start
    same = np.array_equal(ref, ours)
    print(f"{args.n:,} x {args.d} float32 embeddings, k = {args.k}")
    print(f"numpy loop (ref) {t_ref:8.2f} s\ndataflywheel     {t_ours:8.2f} s")
    print(
        f"identical selection: {same}; speed-up {t_ref / t_ours:.1f}x (target >= 3x); "
        f"peak RSS {peak_rss_mib():,.0f} MiB"
    )
    assert same


if __name__ == "__main__":
    main()
