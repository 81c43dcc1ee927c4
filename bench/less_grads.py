"""LESS gradient features: per-sample LoRA gradients with torch.func vmap against one backward pass per
sample (the same features), on AlpacaEval pairs with the real SmolLM2-135M.

    python -m bench.less_grads [--n 32] [--rank 8] [--batch 8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import alpaca_eval_pairs, peak_rss_mib
from dataflywheel.lib.gradients import LoraGradients
from dataflywheel.models.hf import HFBackend


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()
    backend = HFBackend("embedded:smollm2-135m-instruct", device="cpu")
    lg = LoraGradients(
        backend,
        r=args.rank,
        alpha=4 * args.rank,
        dropout=0.0,
        targets=("q_proj", "v_proj"),
        max_length=args.max_length,
    )
    convs = [
        [{"role": "user", "content": q}, {"role": "assistant", "content": a[:600]}]
        for q, a in alpaca_eval_pairs(args.n)
    ]
    ex = [lg.example(c) for c in convs]
    lora = {n: p.detach().clone() for n, p in lg.model.named_parameters() if p.requires_grad}
    lg.per_sample_grads(ex[:2], lora, 2)
    lg.per_sample_grads_loop(ex[:2], lora)
    start = time.perf_counter()
    ref = lg.per_sample_grads_loop(ex, lora)
    t_ref = time.perf_counter() - start
    times, rels = {}, {}
    for method in ("vmap", "hooks"):
        start = time.perf_counter()
        got = lg.per_sample_grads(ex, lora, args.batch, method=method)
        times[method] = time.perf_counter() - start
        rels[method] = float(np.abs(got - ref).max() / np.abs(ref).max())
    print(
        f"{args.n} examples (<= {args.max_length} tokens), LoRA r={args.rank} on q,v: "
        f"{lg.n_params:,} parameters"
    )
    print(f"{'':34} {'seconds':>8} {'speed-up':>9} {'max rel. diff':>14}")
    print(f"{'one backward per sample (ref)':34} {t_ref:8.2f} {1.0:8.2f}x {0:14.1e}")
    for method in ("vmap", "hooks"):
        label = f"{method}, batches of {args.batch}"
        print(f"{label:34} {times[method]:8.2f} {t_ref / times[method]:8.2f}x {rels[method]:14.1e}")
    print(f"target: >= 1.2x on CPU (default method: hooks); peak RSS {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
