"""Synthetic oversampling against random oversampling and SMOTE, on one classifier, in one run.

Task: which MMLU subject a question is from, among four close ones (astronomy, college / conceptual /
high-school physics). Training set: 60 questions of three subjects and 6 of the fourth (10:1); test set:
40 other questions of each. Classifier: logistic regression over MiniLM embeddings of the question.
Training sets compared, each minority subject in turn:

* none: the imbalanced set as is;
* random: the minority rows repeated until balanced (imbalanced-learn's RandomOverSampler);
* smote: SMOTE over the embeddings (imbalanced-learn);
* llm: `oversample` with SmolLM2 shown 5 minority questions per request, the new questions embedded;
* llm-tuned: the paper's setting: SmolLM2 LoRA-tuned on the training set with the subject first
  (`group_conditioned` + `sft`), then `oversample` naming the subject only (`examples: 0`).

Reported: balanced accuracy and worst-subject F1 on the test set, means over the rotations.

    python -m bench.oversample [--rotations 4] [--epochs 2] [--no-tuned]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import MODEL, SHARED, peak_rss_mib, run

SUBJECTS = ("astronomy", "college_physics", "conceptual_physics", "high_school_physics")


def split(rng: np.random.Generator, minority: str, major: int, minor: int, test: int):
    from dataflywheel.experiments.noise import read_mmlu

    train, held = [], []
    every = read_mmlu(SHARED / "mmlu_test" / "test")
    for subject in SUBJECTS:
        rows = [r for r in every if r["subject"] == subject]
        order = rng.permutation(len(rows))
        n = minor if subject == minority else major
        train += [{"instruction": rows[i]["question"], "tag_subject": subject} for i in order[:n]]
        held += [{"instruction": rows[i]["question"], "tag_subject": subject} for i in order[n : n + test]]
    return train, held


def scores(x_train, y_train, x_test, y_test) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, f1_score

    clf = LogisticRegression(max_iter=5000).fit(x_train, y_train)
    pred = clf.predict(x_test)
    return {
        "balanced_accuracy": balanced_accuracy_score(y_test, pred),
        "worst_f1": float(np.min(f1_score(y_test, pred, average=None, labels=list(SUBJECTS)))),
    }


def main() -> None:
    from imblearn.over_sampling import SMOTE, RandomOverSampler

    from dataflywheel.models.st import SentenceTransformersBackend

    ap = argparse.ArgumentParser()
    ap.add_argument("--rotations", type=int, default=4, help="how many subjects take the minority turn")
    ap.add_argument("--major", type=int, default=60)
    ap.add_argument("--minor", type=int, default=6)
    ap.add_argument("--test", type=int, default=40)
    ap.add_argument("--epochs", type=float, default=2.0, help="generator fine-tuning epochs (llm-tuned)")
    ap.add_argument("--no-tuned", action="store_true", help="skip the fine-tuned generator")
    ap.add_argument("--model", default=MODEL, help="the few-shot generator, any recipe model spec")
    args = ap.parse_args()
    embedder = SentenceTransformersBackend("embedded:all-minilm-l6-v2", device="cpu")
    methods = ["none", "random", "smote", "llm"] + ([] if args.no_tuned else ["llm-tuned"])
    table: dict[str, list[dict]] = {m: [] for m in methods}
    made_counts: dict[str, list[int]] = {"llm": [], "llm-tuned": []}
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-oversample-") as tmp:
        folder = Path(tmp)
        for minority in SUBJECTS[: args.rotations]:
            train, held = split(rng, minority, args.major, args.minor, args.test)
            tag = minority[:12]
            (folder / f"{tag}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
            x = embedder.embed([r["instruction"] for r in train])
            y = np.array([r["tag_subject"] for r in train])
            x_test = embedder.embed([r["instruction"] for r in held])
            y_test = np.array([r["tag_subject"] for r in held])
            table["none"].append(scores(x, y, x_test, y_test))
            table["random"].append(
                scores(*RandomOverSampler(random_state=0).fit_resample(x, y), x_test, y_test)
            )
            smote = SMOTE(random_state=0, k_neighbors=min(5, args.minor - 1))
            table["smote"].append(scores(*smote.fit_resample(x, y), x_test, y_test))
            generators = {"llm": ("lm", 5)}
            models = [f"lm: {args.model}"]
            if not args.no_tuned:
                run(
                    folder,
                    f"{tag}-gen",
                    f"""
                    version: 1
                    name: generator
                    inputs: [{{path: {tag}.jsonl}}]
                    models: {{base: {MODEL}}}
                    steps:
                      - group_conditioned: {{column: tag_subject}}
                      - sft: {{model: base, output_model: generator, epochs: {args.epochs}, batch_size: 8,
                               lora_r: 16, lr: 0.0005}}
                """,
                )
                ckpt = next((folder / f"{tag}-gen").glob("steps/*/checkpoint"))
                models.append(f"tuned: {{backend: hf, model: '{ckpt}', device: cpu}}")
                generators["llm-tuned"] = ("tuned", 0)
            for method, (model, examples) in generators.items():
                result, _, _ = run(
                    folder,
                    f"{tag}-{method}",
                    f"""
                    version: 1
                    name: oversample
                    inputs: [{{path: {tag}.jsonl}}]
                    models: {{{", ".join(models)}}}
                    steps:
                      - oversample: {{model: {model}, column: tag_subject, examples: {examples},
                                      max_tokens: 96}}
                    output: {{path: {tag}-{method}.jsonl}}
                """,
                )
                new = [r for r in map(json.loads, open(result.output_path)) if r.get("oversample_group")]
                made_counts[method].append(len(new))
                if new:
                    x_new = embedder.embed([r["messages"][0]["content"] for r in new])
                    x_all = np.concatenate([x, x_new])
                    y_all = np.concatenate([y, [r["tag_subject"] for r in new]])
                else:
                    x_all, y_all = x, y
                table[method].append(scores(x_all, y_all, x_test, y_test))
    print(f"MMLU subject classification, {args.rotations} rotations, minority {args.minor} vs {args.major}")
    print(f"{'method':>10} {'balanced acc':>12} {'worst F1':>9}")
    summary = {}
    for m in methods:
        bal = float(np.mean([s["balanced_accuracy"] for s in table[m]]))
        worst = float(np.mean([s["worst_f1"] for s in table[m]]))
        summary[m] = {"balanced_accuracy": round(bal, 4), "worst_f1": round(worst, 4)}
        print(f"{m:>10} {bal:>12.3f} {worst:>9.3f}")
    print("generated minority rows per rotation:", {k: v for k, v in made_counts.items() if v})
    print(json.dumps({"summary": summary, "per_rotation": table}, default=float))
    print(f"{time.perf_counter() - start:.0f} s, peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
