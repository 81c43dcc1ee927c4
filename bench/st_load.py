"""Cold start of the embedder: a fresh process that imports, loads the embedded MiniLM and embeds texts,
through sentence-transformers (the reference) and through the backend's plain transformers path.

Every recipe run (and every Ray worker) that embeds pays this once; the vectors are the same (the
largest absolute difference is printed).

    python -m bench.st_load [--n 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

from bench.common import ROOT, alpaca_eval_pairs

CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
texts = json.load(open(sys.argv[2]))
if sys.argv[1] == "sentence-transformers":
    from sentence_transformers import SentenceTransformer
    from dataflywheel.models import embedded
    model = SentenceTransformer(str(embedded.resolve("embedded:all-minilm-l6-v2")), device="cpu")
    loaded = time.perf_counter()
    vecs = model.encode(texts, batch_size=64, normalize_embeddings=True)
else:
    from dataflywheel.models.st import SentenceTransformersBackend
    backend = SentenceTransformersBackend("embedded:all-minilm-l6-v2", "cpu")
    assert backend.plain is not None and "sentence_transformers" not in sys.modules
    loaded = time.perf_counter()
    vecs = backend.embed(texts)
done = time.perf_counter()
import numpy as np
np.save(sys.argv[3], vecs)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"load": loaded - start, "embed": done - loaded, "total": done - start, "peak": peak}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    texts = [q + " " + a for q, a in alpaca_eval_pairs(args.n)]
    tmp = ROOT / "runs" / "bench-st-load"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "texts.json").write_text(json.dumps(texts))
    results: dict[str, list[dict]] = {"sentence-transformers": [], "plain": []}
    for _ in range(args.repeats):  # alternate, so both see the same machine
        for way in results:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, way, str(tmp / "texts.json"), str(tmp / f"{way}.npy")],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            results[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
    diff = np.abs(np.load(tmp / "plain.npy") - np.load(tmp / "sentence-transformers.npy")).max()
    print(
        f"{args.n} AlpacaEval instruction + answer texts, MiniLM-L6, CPU, median of {args.repeats} processes"
    )
    print(f"{'':34} {'import+load s':>13} {'embed s':>8} {'total s':>8} {'peak MiB':>9}")
    med = {}
    for way, label in (
        ("sentence-transformers", "sentence-transformers (reference)"),
        ("plain", "plain transformers path"),
    ):
        rows = results[way]
        med[way] = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
        m = med[way]
        print(f"{label:34} {m['load']:13.2f} {m['embed']:8.2f} {m['total']:8.2f} {m['peak']:9.0f}")
    ratio = med["sentence-transformers"]["total"] / med["plain"]["total"]
    print(f"speed-up of a cold start: {ratio:.2f}x; largest difference between the vectors: {diff:.1e}")


if __name__ == "__main__":
    main()
