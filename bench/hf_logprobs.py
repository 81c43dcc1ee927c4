"""Response log-probabilities: the hf backend's batched scorer against a per-sample forward loop.

The loop is how Cherry LLM's reference scores IFD: one sequence at a time, full logits, log-softmax,
prompt positions masked. Both score the same (instruction, answer) pairs from AlpacaEval with the real
SmolLM2-135M-Instruct in float32; the values must agree to 1e-4.

    python bench/hf_logprobs.py [--n 64] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import alpaca_eval_pairs, matmul_peak_gflops, peak_rss_mib
from dataflywheel.models.hf import HFBackend


def reference_loop(backend: HFBackend, pairs: list[tuple[list[int], list[int]]]) -> list[list[float]]:
    out = []
    for p, r in pairs:
        ids = torch.tensor([p + r])
        with torch.inference_mode():
            logits = backend.model(ids).logits[0].float()
        lp = logits[:-1].log_softmax(-1)
        targets = ids[0, 1:]
        out.append(lp[len(p) - 1 :].gather(1, targets[len(p) - 1 :, None]).squeeze(1).tolist())
    return out


def flops(backend: HFBackend, pairs, lm_head_positions: int) -> float:
    """Forward FLOPs: 2 x non-embedding params per token, attention, and the LM head where it is applied."""
    cfg = backend.model.config
    n_params = sum(p.numel() for p in backend.model.parameters())
    emb = cfg.vocab_size * cfg.hidden_size
    body = n_params - emb  # tied embeddings: the LM head is counted separately
    tokens = sum(len(p) + len(r) for p, r in pairs)
    attn = sum(2 * 2 * cfg.num_hidden_layers * cfg.hidden_size * (len(p) + len(r)) ** 2 / 2 for p, r in pairs)
    return 2 * body * tokens + attn + 2 * emb * lm_head_positions


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=256, help="cut answers to this many characters x4")
    args = ap.parse_args()
    backend = HFBackend("embedded:smollm2-135m-instruct", device="cpu", dtype="float32")
    data = alpaca_eval_pairs(args.n)
    convs = [[{"role": "user", "content": q}] for q, _ in data]
    responses = [a[: args.max_tokens * 4] for _, a in data]
    pairs = [backend.split_ids(c, r) for c, r in zip(convs, responses, strict=True)]
    tokens = sum(len(p) + len(r) for p, r in pairs)
    backend.logprobs(convs[:2], responses[:2])  # warm up
    reference_loop(backend, pairs[:2])

    start = time.perf_counter()
    ref = reference_loop(backend, pairs)
    t_ref = time.perf_counter() - start
    start = time.perf_counter()
    got = backend.logprobs(convs, responses)
    t_ours = time.perf_counter() - start

    diff = max(
        float(np.max(np.abs(np.array(a) - np.array(b.logprobs)))) for a, b in zip(ref, got, strict=True)
    )
    peak = matmul_peak_gflops()
    f_ref = flops(backend, pairs, tokens - len(pairs))
    f_ours = flops(backend, pairs, sum(len(r) for _, r in pairs))
    print(
        f"{len(pairs)} sequences, {tokens:,} tokens "
        f"(SmolLM2-135M, float32, {torch.get_num_threads()} threads)"
    )
    print(f"max |difference| of log-probs: {diff:.2e} (must be < 1e-4)")
    print(f"{'':22} {'seconds':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'MFU':>6}")
    for name, t, f in (("per-sample loop (ref)", t_ref, f_ref), ("batched hf backend", t_ours, f_ours)):
        print(f"{name:22} {t:8.2f} {tokens / t:9.0f} {f / t / 1e9:8.1f} {f / t / 1e9 / peak:6.1%}")
    print(f"matmul peak of this machine: {peak:.0f} GFLOP/s (float32)")
    print(f"speed-up: {t_ref / t_ours:.2f}x (target >= 1.2x on CPU); peak RSS {peak_rss_mib():.0f} MiB")
    assert diff < 1e-4, diff


if __name__ == "__main__":
    main()
