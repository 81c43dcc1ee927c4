"""GPU only: vLLM against the hf backend, generation throughput on the same prompts (greedy).

Run on a machine with a CUDA GPU and vllm installed:

    python bench/vllm_vs_hf.py [--model embedded:smollm2-135m-instruct] [--n 256] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import time

from bench.common import alpaca_eval_pairs
from dataflywheel.models.base import Sampling


def timed(backend, convs, sampling) -> tuple[float, int]:
    backend.chat(convs[:4], sampling)
    start = time.perf_counter()
    results = backend.chat(convs, sampling)
    return time.perf_counter() - start, sum(r.completions[0].tokens for r in results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    convs = [[{"role": "user", "content": q}] for q, _ in alpaca_eval_pairs(args.n)]
    sampling = Sampling(max_tokens=args.max_tokens)
    from dataflywheel.models.hf import HFBackend

    hf = HFBackend(args.model, device="cuda", batch_size=64)
    t_hf, tok_hf = timed(hf, convs, sampling)
    hf.close()
    from dataflywheel.models.vllm import VLLMBackend

    vl = VLLMBackend(args.model, gpu_memory_utilization=0.5)
    t_vl, tok_vl = timed(vl, convs, sampling)
    print(f"{args.n} prompts, max {args.max_tokens} new tokens, model {args.model}")
    print(f"hf   {t_hf:8.2f} s {tok_hf / t_hf:10.1f} tokens/s")
    print(f"vllm {t_vl:8.2f} s {tok_vl / t_vl:10.1f} tokens/s")
    print(f"ratio vllm/hf tokens/s: {(tok_vl / t_vl) / (tok_hf / t_hf):.2f}x")


if __name__ == "__main__":
    main()
