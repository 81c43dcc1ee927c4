"""ToxiCraft's measured effect: a small harmful-request detector trained on seeds alone against seeds +
ToxiCraft's synthetic posts, on the same held-out rows, in one run.

Data: XSTest's 450 prompts (250 safe, 200 unsafe, including safe prompts that look unsafe: "How do I kill
a Python process?"). Seeds: --seeds per label drawn at random; held out: all the others. Detector:
TF-IDF (word 1-2 grams) + logistic regression, as the paper's CPU setting. Compared: seeds only; seeds +
synthetic posts checked by the model (the paper's validation); seeds + the same generation unchecked.
Reported: macro-F1 on the held-out prompts, the number of synthetic rows and the drop counts.

    python -m bench.toxicraft [--seeds 10] [--per-label 40]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import MODEL, SHARED, peak_rss_mib, run


def macro_f1(train_texts, train_labels, test_texts, test_labels) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline

    clf = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=2000)
    )
    clf.fit(train_texts, train_labels)
    return float(f1_score(test_labels, clf.predict(test_texts), average="macro"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10, help="seed prompts per label")
    ap.add_argument("--per-label", type=int, default=40, help="synthetic posts per label")
    ap.add_argument("--model", default=MODEL, help="the annotating / writing model, any recipe model spec")
    args = ap.parse_args()
    with open(SHARED / "xstest" / "xstest_prompts.csv", newline="") as f:
        rows = [{"text": r["prompt"], "label": r["label"]} for r in csv.DictReader(f)]
    rng = np.random.default_rng(0)
    seeds = []
    for label in ("safe", "unsafe"):
        idx = [i for i, r in enumerate(rows) if r["label"] == label]
        seeds += [int(i) for i in rng.choice(idx, args.seeds, replace=False)]
    held = [r for i, r in enumerate(rows) if i not in set(seeds)]
    seed_rows = [rows[i] for i in seeds]
    start = time.perf_counter()
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-toxicraft-") as tmp:
        folder = Path(tmp)
        with open(folder / "seeds.jsonl", "w") as f:
            for i, r in enumerate(seed_rows):
                f.write(json.dumps({"id": f"s{i}", "instruction": r["text"], "tag_label": r["label"]}) + "\n")
        for check in (True, False):
            name = "checked" if check else "unchecked"
            result, manifest, seconds = run(
                folder,
                name,
                f"""
                version: 1
                name: toxicraft-{name}
                inputs: [{{path: seeds.jsonl}}]
                models: {{lm: {args.model}}}
                steps:
                  - toxicraft: {{model: lm, column: tag_label, per_label: {args.per_label},
                                 check: {str(check).lower()}, keep_seeds: false}}
                output: {{path: {name}.jsonl}}
            """,
            )
            made = [json.loads(x) for x in open(result.output_path)]
            counts = manifest["steps"][-1]["stats"].get("counts", {})
            out[name] = (made, counts, seconds)
    base_x, base_y = [r["text"] for r in seed_rows], [r["label"] for r in seed_rows]
    test_x, test_y = [r["text"] for r in held], [r["label"] for r in held]
    print(f"XSTest: {len(seed_rows)} seeds, {len(held)} held-out prompts; TF-IDF + logistic regression")
    results = {"seeds only": {"macro_f1": round(macro_f1(base_x, base_y, test_x, test_y), 4), "synthetic": 0}}
    for name, (made, counts, seconds) in out.items():
        x = base_x + [r["messages"][0]["content"] for r in made]
        y = base_y + [r["tag_label"] for r in made]
        results[f"seeds + {name}"] = {
            "macro_f1": round(macro_f1(x, y, test_x, test_y), 4),
            "synthetic": len(made),
            "seconds": round(seconds, 1),
            "counts": {k: v for k, v in counts.items() if not k.startswith("made")},
        }
    for name, r in results.items():
        print(f"{name:>20}: macro-F1 {r['macro_f1']:.3f}  synthetic rows {r['synthetic']}")
    print(json.dumps(results))
    print(f"{time.perf_counter() - start:.0f} s, peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
