"""Heuristic scoring plus MinHash dedup, the local executor against the Ray executor.

    python -m bench.ray_executor [--rows 1000000] [--workers 1,2]
    python -m bench.ray_executor --rows 10000000 --address auto --workers 64 --modes ray   # on a cluster

The data are documents spliced from AlpacaEval sentences with injected near-duplicates
(bench.minhash_dedup), as Alpaca rows. Each mode runs in its own process (its peak RSS is its own;
Ray workers' memory is not in the driver's figure) on the same recipe: text_stats over the response,
minhash_dedup (word 5-grams, 0.8). The outputs must be byte-identical across modes; the script checks it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = """version: 1
name: ray-bench
inputs: [{{path: {data}}}]
shard_size: {shard_size}
steps:
  - text_stats: {{fields: [response]}}
  - minhash_dedup: {{field: response, threshold: 0.8, ngram: 5}}
output: {{path: out.parquet}}
"""


def make_data(path: Path, rows: int) -> None:
    from bench.minhash_dedup import build

    docs, _ = build(rows, 0.1)
    with open(path, "w") as fh:
        for i, d in enumerate(docs):
            fh.write(json.dumps({"instruction": f"Write paragraph {i}.", "output": d}) + "\n")


def one(args) -> None:
    """One mode in this process: prints a JSON line with its timings."""
    from bench.common import peak_rss_mib
    from dataflywheel.recipe.validate import validate_file

    rec, ops, problems = validate_file(Path(args.recipe))
    assert not problems, problems
    run_dir = Path(args.run_dir)
    start = time.perf_counter()
    startup = 0.0
    if args.mode == "local":
        from dataflywheel.engine.local import LocalExecutor

        result = LocalExecutor(rec, ops, run_dir, progress=False).run(fresh=True)
    else:
        from dataflywheel.engine.ray_executor import RayExecutor, init_ray

        init_ray(args.address, None if args.address else args.workers)
        startup = time.perf_counter() - start  # included in the total, reported apart
        result = RayExecutor(
            rec, ops, run_dir, progress=False, address=args.address, workers=args.workers
        ).run(fresh=True)
    total = time.perf_counter() - start
    digest = hashlib.sha256(result.output_path.read_bytes()).hexdigest()[:16]
    steps = {s.op: s.seconds for s in result.steps}
    out = {
        "mode": args.mode if args.mode == "local" else f"ray x{args.workers}",
        "seconds": round(total, 1),
        "startup": round(startup, 1),
        "steps": steps,
        "rows_out": result.rows_out,
        "output_sha": digest,
        "driver_peak_mib": round(peak_rss_mib()),
    }
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shard-size", type=int, default=20_000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--modes", default="local,ray")
    ap.add_argument("--address", default=None)
    ap.add_argument("--work", default=None)
    # internal: run one mode
    ap.add_argument("--mode", default=None)
    ap.add_argument("--recipe", default=None)
    ap.add_argument("--run-dir", default=None)
    args = ap.parse_args()
    if args.mode:
        args.workers = int(args.workers)
        one(args)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="ray-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"pool-{args.rows}.jsonl"
    if not data.exists():
        make_data(data, args.rows)
    recipe = work / "recipe.yaml"
    recipe.write_text(RECIPE.format(data=data, shard_size=args.shard_size))
    runs = []
    for mode in args.modes.split(","):
        for w in args.workers.split(",") if mode == "ray" else ["0"]:
            cmd = [sys.executable, "-m", "bench.ray_executor", "--mode", mode, "--workers", w]
            cmd += ["--recipe", str(recipe), "--run-dir", str(work / f"run-{mode}-{w}")]
            if args.address:
                cmd += ["--address", args.address]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(out.stdout[-2000:], out.stderr[-4000:])
                raise SystemExit(f"{mode} x{w} failed")
            runs.append(json.loads(line[len("RESULT ") :]))
            print(line, flush=True)
    base = next((r for r in runs if r["mode"] == "local"), runs[0])
    same = len({r["output_sha"] for r in runs}) == 1
    print(f"\n{args.rows:,} rows, shards of {args.shard_size:,}; outputs identical: {same}")
    print(
        "| executor | total s | Ray start s | read s | text_stats s | minhash_dedup s | rows/s | vs local "
        "| driver peak MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in runs:
        s = r["steps"]
        print(
            f"| {r['mode']} | {r['seconds']} | {r['startup']} | {s['read']} | {s['text_stats']} | "
            f"{s['minhash_dedup']} | {args.rows / r['seconds']:,.0f} | "
            f"{base['seconds'] / r['seconds']:.2f}x | {r['driver_peak_mib']} |"
        )
    if not same:
        raise SystemExit("outputs differ between executors")


if __name__ == "__main__":
    main()
