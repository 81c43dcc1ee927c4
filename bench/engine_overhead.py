"""Engine overhead: read -> filter -> write of N short rows, dataflywheel's engine against plain `datasets`.

Both sides do the same work: read Alpaca JSON lines, turn them into chat `messages`, keep rows with
quality >= 3, write JSON lines. Each side runs in its own process so its peak RSS is its own.

    python bench/engine_overhead.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_data(path: Path, n: int) -> None:
    rng = random.Random(0)
    words = "the a data model train small fast good bad answer question list write explain why how".split()
    with open(path, "w") as fh:
        for i in range(n):
            ins = " ".join(rng.choices(words, k=rng.randint(4, 10)))
            out = " ".join(rng.choices(words, k=rng.randint(5, 15)))
            fh.write(
                json.dumps(
                    {"instruction": f"{ins} {i}?", "input": "", "output": out, "quality": rng.randint(0, 9)}
                )
                + "\n"
            )


def run_datasets(src: Path, work: Path) -> int:
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=str(src), split="train", cache_dir=str(work / "hf_cache"))

    def to_messages(batch):
        return {
            "messages": [
                [{"role": "user", "content": i}, {"role": "assistant", "content": o}]
                for i, o in zip(batch["instruction"], batch["output"], strict=True)
            ]
        }

    ds = ds.map(to_messages, batched=True, remove_columns=["instruction", "input", "output"])
    ds = ds.filter(lambda b: [q >= 3 for q in b["quality"]], batched=True)
    ds.to_json(str(work / "datasets_out.jsonl"))
    return len(ds)


def run_engine(src: Path, work: Path, shard_size: int) -> int:
    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.recipe.validate import validate_recipe

    raw = {
        "version": 1,
        "name": "bench",
        "inputs": [{"path": str(src)}],
        "shard_size": shard_size,
        "steps": [{"filter": {"column": "quality", "min": 3}}],
        "output": {"path": "out.jsonl"},
    }
    recipe, ops, problems = validate_recipe(raw, work)
    assert not problems, problems
    result = LocalExecutor(recipe, ops, work / "run", progress=False).run()
    return result.rows_out


def child(which: str, src: Path, work: Path, shard_size: int) -> None:
    start = time.perf_counter()
    rows = run_datasets(src, work) if which == "datasets" else run_engine(src, work, shard_size)
    print(json.dumps({"rows_out": rows, "seconds": time.perf_counter() - start}))


def measure(which: str, src: Path, shard_size: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"bench-{which}-"))
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                which,
                "--src",
                str(src),
                "--work",
                str(work),
                "--shard-size",
                str(shard_size),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise SystemExit(f"{which} failed")
        result = json.loads(out.strip().splitlines()[-1])
        result["peak_rss_mib"] = usage.ru_maxrss / 1024
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shard-size", type=int, default=50_000)
    ap.add_argument("--child")
    ap.add_argument("--src")
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.src), Path(args.work), args.shard_size)
        return
    data_dir = Path(tempfile.mkdtemp(prefix="bench-data-"))
    src = data_dir / "pool.jsonl"
    make_data(src, args.rows)
    try:
        ref = measure("datasets", src, args.shard_size)
        eng = measure("engine", src, args.shard_size)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    assert ref["rows_out"] == eng["rows_out"], (ref, eng)
    print(f"rows: {args.rows:,} in, {eng['rows_out']:,} out; shard size {args.shard_size:,}")
    print(f"{'':10} {'seconds':>8} {'rows/s':>10} {'peak RSS MiB':>13}")
    for name, r in (("datasets", ref), ("engine", eng)):
        print(f"{name:10} {r['seconds']:8.1f} {args.rows / r['seconds']:10,.0f} {r['peak_rss_mib']:13,.0f}")
    print(
        f"ratio engine/datasets rows/s: {ref['seconds'] / eng['seconds']:.2f}x (target >= 0.8x); "
        f"engine peak RSS {eng['peak_rss_mib']:,.0f} MiB (target < 2048)"
    )


if __name__ == "__main__":
    main()
