"""LLMaAA's measured effect: the student trained on LLM annotations of actively chosen rows, against the
LLM teacher's own few-shot prompting, by acquisition strategy, with and without reweighting.

Task: the subject of an MMLU question among astronomy, biology (high school), US history (high school) and
law (professional). Gold demonstrations: 5 questions per subject. Pool: 200 unlabelled questions. Test: 160
other questions (40 per subject), in the same input but held out (`holdout`): never annotated, labelled by
the student. Annotation budget: --init rows, then --rounds x --per-round; the
annotator is SmolLM2 with the 5 nearest gold rows as demonstrations. Reported: the student's (a softmax
head over MiniLM embeddings) test accuracy, the accuracy of the LLM's labels on the rows it annotated,
and the teacher's accuracy when it labels the test questions itself with the same prompt.

    python -m bench.llmaaa [--init 20] [--per-round 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import MODEL, SHARED, peak_rss_mib, run

SUBJECTS = {
    "astronomy": "astronomy",
    "high_school_biology": "biology",
    "high_school_us_history": "history",
    "professional_law": "law",
}
TASK = "Name the school subject this exam question belongs to."
EMBEDDER = "{backend: sentence-transformers, model: 'embedded:all-minilm-l6-v2', device: cpu}"


def data(rng: np.random.Generator, gold: int, pool: int, test: int):
    from dataflywheel.experiments.noise import read_mmlu

    every = read_mmlu(SHARED / "mmlu_test" / "test")
    out = {"gold": [], "pool": [], "test": []}
    for subject, label in SUBJECTS.items():
        rows = [r for r in every if r["subject"] == subject and len(r["question"]) < 600]
        order = rng.permutation(len(rows))
        per_pool = pool // len(SUBJECTS)
        for part, lo, hi in (
            ("gold", 0, gold),
            ("pool", gold, gold + per_pool),
            ("test", gold + per_pool, gold + per_pool + test),
        ):
            out[part] += [{"question": rows[i]["question"], "label": label} for i in order[lo:hi]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gold", type=int, default=5, help="gold demonstrations per subject")
    ap.add_argument("--pool", type=int, default=200)
    ap.add_argument("--test", type=int, default=40, help="test questions per subject")
    ap.add_argument("--init", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default=MODEL, help="the annotating / writing model, any recipe model spec")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    sets = data(rng, args.gold, args.pool, args.test)
    configs = [("random", True), ("entropy", True), ("kmeans", True), ("entropy", False)]
    start = time.perf_counter()
    results = []
    predictions: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-llmaaa-") as tmp:
        folder = Path(tmp)
        with open(folder / "rows.jsonl", "w") as f:
            # every row has every field (the validator reads the head of the file): gold rows carry the
            # label, pool rows none, test rows are held out (never annotated, labelled by the student)
            for part, prefix in (("gold", "g"), ("pool", "p"), ("test", "t")):
                for i, r in enumerate(sets[part]):
                    row = {
                        "id": f"{prefix}{i}",
                        "instruction": r["question"],
                        "tag_subject": r["label"] if part == "gold" else None,
                        "true_label": r["label"],
                        "holdout": part == "test",
                    }
                    f.write(json.dumps(row) + "\n")
        labels = sorted(SUBJECTS.values())
        for strategy, reweight in configs:
            name = f"{strategy}-{'rw' if reweight else 'plain'}"
            result, _, seconds = run(
                folder,
                name,
                f"""
                version: 1
                name: {name}
                inputs: [{{path: rows.jsonl}}]
                models: {{lm: {args.model}, emb: {EMBEDDER}}}
                steps:
                  - llmaaa: {{model: lm, embedder: emb, column: tag_subject, task: '{TASK}', labels: {labels},
                             init: {args.init}, per_round: {args.per_round}, rounds: {args.rounds},
                             strategy: {strategy}, reweight: {str(reweight).lower()}, holdout: holdout}}
                output: {{path: {name}.jsonl}}
            """,
            )
            out = [json.loads(x) for x in open(result.output_path)]
            predictions[name] = {r["id"]: r for r in out if r["id"].startswith("t")}
            annotated = [r for r in out if r.get("llmaaa_round") is not None and r["tag_subject"] is not None]
            llm_labels = np.mean([r["tag_subject"] == r["true_label"] for r in annotated])
            zero = [r for r in annotated if r["score_llmaaa_weight"] == 0] if reweight else []
            zero_wrong = (
                np.mean([r["tag_subject"] != r["true_label"] for r in zero]) if zero else float("nan")
            )
            results.append(
                {"name": name, "strategy": strategy, "reweight": reweight,
                 "llm_label_accuracy": round(float(llm_labels), 4),
                 "annotated": len(annotated), "zero_weight": len(zero),
                 "zero_weight_wrong_share": round(float(zero_wrong), 4), "seconds": round(seconds, 1)}
            )  # fmt: skip
            print(results[-1], flush=True)
        for r in results:  # the student on the held-out test rows (never annotated)
            rows = list(predictions[r["name"]].values())
            assert all(x.get("llmaaa_round") is None for x in rows)
            r["student_accuracy"] = round(
                float(np.mean([x["llmaaa_predicted"] == x["true_label"] for x in rows])), 4
            )
            r["test_rows"] = len(rows)
        # the teacher labelling the same test questions itself, same prompt and retrieved demonstrations
        teacher, unparsed = teacher_accuracy(sets["gold"], sets["test"], labels, args.model)
    print(
        f"teacher few-shot accuracy on the test questions: {teacher:.4f} ({unparsed} replies named no label)"
    )
    print(f"{'strategy':>10} {'reweight':>8} {'student acc':>11} {'LLM label acc':>13} zero-w (wrong share)")
    for r in results:
        print(f"{r['strategy']:>10} {r['reweight']!s:>8} {r['student_accuracy']:>11.3f} "
              f"{r['llm_label_accuracy']:>13.3f} {r['zero_weight']:>8} "
              f"({r['zero_weight_wrong_share']:.2f})")  # fmt: skip
    print(
        json.dumps({"teacher_accuracy": round(teacher, 4), "teacher_unparsed": unparsed, "results": results})
    )
    print(f"{time.perf_counter() - start:.0f} s, peak RSS {peak_rss_mib():.0f} MiB")


def teacher_accuracy(
    gold_rows: list[dict], test: list[dict], labels: list[str], spec: str
) -> tuple[float, int]:
    import yaml

    from dataflywheel.lib.diversity import nearest
    from dataflywheel.models.base import Sampling
    from dataflywheel.models.client import Model
    from dataflywheel.models.spec import ModelSpec
    from dataflywheel.ops.enhance.llmaaa import annotation_prompt, parse_label

    lm = Model("lm", ModelSpec(**yaml.safe_load(spec)))
    emb = Model(
        "emb", ModelSpec(backend="sentence-transformers", model="embedded:all-minilm-l6-v2", device="cpu")
    )
    gold = [(r["question"], r["label"]) for r in gold_rows]
    near = nearest(emb.embed([q for q, _ in gold]), emb.embed([r["question"] for r in test]), 5)
    convs = [
        [{"role": "user", "content": annotation_prompt(TASK, labels, [gold[j] for j in hits], r["question"])}]
        for r, hits in zip(test, near, strict=True)
    ]
    replies = lm.chat(convs, Sampling(max_tokens=16))
    got = [parse_label(r.text or "", labels) for r in replies]
    right = [g is not None and g["label"] == r["label"] for g, r in zip(got, test, strict=True)]
    return float(np.mean(right)), sum(g is None for g in got)


if __name__ == "__main__":
    main()
