"""The openai backend through `flywheel serve` against the same model in process (same prompts, greedy).

The server batches concurrent requests dynamically, so the client's concurrency becomes the model's batch.

    python bench/serve_overhead.py [--n 64] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import httpx

from bench.common import ROOT, alpaca_eval_pairs
from dataflywheel.models.base import Sampling
from dataflywheel.models.hf import HFBackend
from dataflywheel.models.openai import OpenAIBackend


def start_server(port: int, batch: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dataflywheel.cli",
            "serve",
            "embedded:smollm2-135m-instruct",
            "--port",
            str(port),
            "--device",
            "cpu",
            "--max-batch",
            str(batch),
            "--name",
            "smol",
        ],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    convs = [[{"role": "user", "content": q}] for q, _ in alpaca_eval_pairs(args.n)]
    sampling = Sampling(max_tokens=args.max_tokens)
    proc = start_server(args.port, args.batch)
    try:
        client = OpenAIBackend("smol", f"http://127.0.0.1:{args.port}/v1", max_concurrency=args.batch)
        client.chat(convs[:2], sampling)
        start = time.perf_counter()
        remote = client.chat(convs, sampling)
        t_remote = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait()
    local_backend = HFBackend("embedded:smollm2-135m-instruct", device="cpu", batch_size=args.batch)
    local_backend.chat(convs[:2], sampling)
    start = time.perf_counter()
    local = local_backend.chat(convs, sampling)
    t_local = time.perf_counter() - start
    tokens = sum(r.completions[0].tokens for r in local)
    same = sum(a.text == b.text for a, b in zip(remote, local, strict=True))
    failed = sum(r.error is not None for r in remote)
    print(f"{args.n} prompts, greedy, max {args.max_tokens} new tokens, batch {args.batch}")
    print(f"{'':28} {'seconds':>8} {'tokens/s':>9}")
    print(f"{'in process (hf backend)':28} {t_local:8.2f} {tokens / t_local:9.1f}")
    print(f"{'openai backend -> serve':28} {t_remote:8.2f} {tokens / t_remote:9.1f}")
    print(f"failed requests: {failed}; identical completions: {same}/{args.n}")
    print(f"ratio served/in-process throughput: {t_local / t_remote:.2f}x")


if __name__ == "__main__":
    main()
