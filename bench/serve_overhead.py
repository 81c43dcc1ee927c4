"""`flywheel serve` against the same model in process, with continuous batching and with whole-request
(dynamic) batching.

1. Throughput: the same prompts (greedy) through the `openai` backend, every request in flight at once,
   against the hf backend in process (one call: all prompts sorted by length, one batch).
2. Latency under mixed load: long requests go first; a second later short ones arrive. Whole-request
   batching runs the short ones after the long batch (their max_tokens differ, so they never share one);
   continuous batching lets them join the running batch and leave after their few tokens.

The server's peak memory (VmHWM) is printed beside each.

    python -m bench.serve_overhead [--n 64] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import ROOT, alpaca_eval_pairs
from dataflywheel.models.base import Sampling
from dataflywheel.models.hf import HFBackend
from dataflywheel.models.openai import OpenAIBackend


def start_server(port: int, batch: int, continuous: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "dataflywheel.cli", "serve", "embedded:smollm2-135m-instruct"]
    args += ["--port", str(port), "--device", "cpu", "--max-batch", str(batch), "--name", "smol"]
    args += [] if continuous else ["--no-continuous"]
    proc = subprocess.Popen(
        args, cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def mixed_load(url: str, long_prompts: list[str], short_prompts: list[str], long_tokens: int) -> dict:
    """Long requests first, short ones a second later: each short request's latency, the long ones' end."""

    async def ask(http, prompt: str, tokens: int, t0: float) -> tuple[float, float]:
        body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0}
        start = time.monotonic()
        r = await http.post(f"{url}/chat/completions", json=body)
        r.raise_for_status()
        end = time.monotonic()
        return end - start, end - t0

    async def main():
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=600, limits=limits) as http:
            t0 = time.monotonic()
            longs = [asyncio.create_task(ask(http, p, long_tokens, t0)) for p in long_prompts]
            await asyncio.sleep(1.0)
            shorts = await asyncio.gather(*(ask(http, p, 8, t0) for p in short_prompts))
            return shorts, await asyncio.gather(*longs)

    shorts, longs = asyncio.run(main())
    latency = np.array([s for s, _ in shorts])
    return {
        "p50": float(np.percentile(latency, 50)),
        "p99": float(np.percentile(latency, 99)),
        "long_end": max(e for _, e in longs),
        "all_end": max(e for _, e in shorts + longs),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64, help="server rows at most (and the in-process batch)")
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    pairs = alpaca_eval_pairs(args.n + 40)
    convs = [[{"role": "user", "content": q}] for q, _ in pairs[: args.n]]
    sampling = Sampling(max_tokens=args.max_tokens)
    long_prompts = [q for q, _ in pairs[args.n : args.n + 8]]
    short_prompts = [q for q, _ in pairs[args.n + 8 : args.n + 40]]

    served = {}
    for continuous in (True, False):
        proc = start_server(args.port, args.batch, continuous)
        try:
            url = f"http://127.0.0.1:{args.port}/v1"
            client = OpenAIBackend("smol", url, max_concurrency=args.n, timeout_s=600)
            client.chat(convs[:2], sampling)
            start = time.perf_counter()
            remote = client.chat(convs, sampling)
            seconds = time.perf_counter() - start
            mixed = mixed_load(url, long_prompts, short_prompts, 128)
            served[continuous] = (seconds, remote, mixed, peak_mib(proc.pid))
        finally:
            proc.terminate()
            proc.wait()

    local_backend = HFBackend("embedded:smollm2-135m-instruct", device="cpu", batch_size=args.batch)
    local_backend.chat(convs[:2], sampling)
    start = time.perf_counter()
    local = local_backend.chat(convs, sampling)
    t_local = time.perf_counter() - start
    tokens = sum(r.completions[0].tokens for r in local)

    print(
        f"1. {args.n} prompts in flight at once, greedy, max {args.max_tokens} new tokens, {args.batch} rows"
    )
    print(f"{'':34} {'seconds':>8} {'tokens/s':>9} {'ratio':>6} {'same text':>10} {'peak MiB':>9}")
    print(f"{'in process (hf backend)':34} {t_local:8.2f} {tokens / t_local:9.1f} {1:6.2f}x {'':>10} {'':>9}")
    for continuous, label in ((True, "serve, continuous batching"), (False, "serve, whole-request batching")):
        seconds, remote, _, peak = served[continuous]
        same = sum(a.text == b.text for a, b in zip(remote, local, strict=True))
        failed = sum(r.error is not None for r in remote)
        print(
            f"{label:34} {seconds:8.2f} {tokens / seconds:9.1f} {t_local / seconds:6.2f}x "
            f"{f'{same}/{args.n}':>10} {peak:9.0f}" + (f"  ({failed} failed)" if failed else "")
        )
    print(f"\n2. 8 requests of 128 tokens, then a second later {len(short_prompts)} of 8 tokens")
    print(f"{'':34} {'short p50':>9} {'short p99':>9} {'long ones end':>13} {'all end':>8}")
    for continuous, label in ((True, "serve, continuous batching"), (False, "serve, whole-request batching")):
        m = served[continuous][2]
        print(f"{label:34} {m['p50']:8.2f}s {m['p99']:8.2f}s {m['long_end']:12.2f}s {m['all_end']:7.2f}s")


if __name__ == "__main__":
    main()
