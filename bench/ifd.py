"""IFD scoring: the `ifd` op (batched response-only log-probabilities) against a per-sample loop as the
Cherry LLM reference runs it (two full forward passes per sample: with and without the instruction).

    python -m bench.ifd [--n 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import alpaca_eval_pairs, matmul_peak_gflops, peak_rss_mib
from bench.hf_logprobs import flops
from dataflywheel.data import io
from dataflywheel.models.client import Model
from dataflywheel.models.hf import HFBackend
from dataflywheel.ops import registry
from dataflywheel.ops.base import OpContext
from dataflywheel.recipe.models import ModelSpec


def mean_nll(backend, p, r) -> float:
    ids = torch.tensor([p + r])
    with torch.inference_mode():
        logits = backend.model(ids).logits[0].float()
    lp = logits[:-1].log_softmax(-1)
    return -float(lp[len(p) - 1 :].gather(1, ids[0, len(p) :, None]).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    args = ap.parse_args()
    backend = HFBackend("embedded:smollm2-135m-instruct", device="cpu", dtype="float32")
    data = [(q, a[:1024]) for q, a in alpaca_eval_pairs(args.n)]
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in data
    ]
    header = backend.assistant_header()
    cond_pairs = [backend.split_ids([{"role": "user", "content": q}], a) for q, a in data]
    direct_pairs = [backend.split_text_ids(header, a) for _, a in data]
    spec = ModelSpec(backend="hf", model="embedded:smollm2-135m-instruct", cache="off")
    op = registry.get("ifd")({"model": "m"}, OpContext(models={"m": Model("m", spec, backend=backend)}))
    table = io.rows_to_table(rows)
    op.score(io.rows_to_table(rows[:2]))  # warm up

    start = time.perf_counter()
    ref = [
        mean_nll(backend, *c) / mean_nll(backend, *d) for c, d in zip(cond_pairs, direct_pairs, strict=True)
    ]
    t_ref = time.perf_counter() - start
    start = time.perf_counter()
    got = op.score(table)["score_ifd"]
    t_ours = time.perf_counter() - start

    diff = float(np.max(np.abs(np.array(ref) - np.array(got))))
    pairs = cond_pairs + direct_pairs
    tokens = sum(len(p) + len(r) for p, r in pairs)
    peak = matmul_peak_gflops()
    f_ref = flops(backend, pairs, tokens - len(pairs))
    f_ours = flops(backend, pairs, sum(len(r) for _, r in pairs))
    print(
        f"{args.n} samples, 2 passes each, {tokens:,} tokens (SmolLM2-135M, float32, "
        f"{torch.get_num_threads()} threads)"
    )
    print(f"max |IFD difference|: {diff:.2e} (must be < 1e-4)")
    print(f"{'':22} {'seconds':>8} {'samples/s':>10} {'GFLOP/s':>8} {'MFU':>6}")
    for name, t, f in (("per-sample loop (ref)", t_ref, f_ref), ("ifd op (batched)", t_ours, f_ours)):
        print(f"{name:22} {t:8.2f} {args.n / t:10.2f} {f / t / 1e9:8.1f} {f / t / 1e9 / peak:6.1%}")
    print(
        f"matmul peak: {peak:.0f} GFLOP/s; speed-up {t_ref / t_ours:.2f}x (target >= 1.2x on CPU); "
        f"peak RSS {peak_rss_mib():.0f} MiB"
    )
    assert diff < 1e-4


if __name__ == "__main__":
    main()
