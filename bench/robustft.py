"""RobustFT's measured effect, the paper's protocol: MMLU with 30% / 50% / 70% of its labels replaced by
wrong ones, then `robustft_detect` + `robustft_relabel` through the engine.

For each noise rate: detection precision and recall (against the injected flips), and the label accuracy
of three training sets against the true labels: the noisy set as given, the rows detection calls clean
(detection only), and RobustFT's repaired set (clean + relabeled rows below the median entropy).

    python -m bench.robustft [--rows 120] [--rates 0.3 0.5 0.7] [--max-tokens 128] [--temperature 1.0]
        [--model "{backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}"]

Any recipe model spec works for --model (an OpenAI-compatible server, vLLM); the embedder stays MiniLM.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.common import MODEL, SHARED, peak_rss_mib, run

EMBEDDER = "{backend: sentence-transformers, model: 'embedded:all-minilm-l6-v2', device: cpu}"


def main() -> None:
    from dataflywheel.engine.runinfo import drop_log
    from dataflywheel.experiments.noise import inject_label_noise, read_mmlu, score_repair

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=120, help="MMLU rows: 10 from each of the first subjects")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--model", default=MODEL)
    args = ap.parse_args()
    per = 10
    rows = read_mmlu(SHARED / "mmlu_test" / "test", per_subject=per, subjects=-(-args.rows // per))[
        : args.rows
    ]
    print(f"RobustFT on {len(rows)} MMLU rows, temperature {args.temperature}, max_tokens {args.max_tokens}")
    print(f"{'noise':>5} {'flagged':>7} {'prec':>5} {'recall':>6} | label accuracy: {'noisy':>5} "
          f"{'clean-only':>10} {'repaired':>8} (kept, relabeled right/all) | seconds")  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-robustft-") as tmp:
        folder = Path(tmp)
        for rate in args.rates:
            noisy = inject_label_noise(rows, rate, seed=0)
            name = f"noise{int(rate * 100)}"
            with open(folder / f"{name}.jsonl", "w") as f:
                for i, row in enumerate(noisy.rows):
                    f.write(json.dumps({"id": str(i), **row}) + "\n")
            common = f"answer_field: answer, max_tokens: {args.max_tokens}, temperature: {args.temperature}"
            result, manifest, seconds = run(
                folder,
                name,
                f"""
                version: 1
                name: {name}
                inputs: [{{path: {name}.jsonl}}]
                models:
                  lm: {args.model}
                  emb: {EMBEDDER}
                steps:
                  - robustft_detect: {{model: lm, {common}}}
                  - robustft_relabel: {{model: lm, embedder: emb, {common}}}
                output: {{path: {name}-out.jsonl}}
            """,
            )
            out = [json.loads(line) for line in open(result.output_path)]
            drops = [json.loads(r) for r in drop_log(result.run_dir).column("row").to_pylist()]
            tags = {r["id"]: r["tag_robustft"] for r in out + drops}
            score = score_repair(noisy, tags, {r["id"]: r["answer"] for r in out})
            clean = [i for i, t in tags.items() if t == "clean"]
            truth = {str(i): r["true_answer"] for i, r in enumerate(noisy.rows)}
            clean_acc = sum(noisy.rows[int(i)]["answer"] == truth[i] for i in clean) / max(1, len(clean))
            s = score.as_dict()
            print(f"{rate:>5.0%} {s['flagged']:>7} {s['precision']:>5.2f} {s['recall']:>6.2f} | "
                  f"{'':>15}{s['accuracy_noisy']:>5.3f} {clean_acc:>10.3f} {s['accuracy_repaired']:>8.3f} "
                  f"({s['kept']}, {s['relabeled_right']}/{s['relabeled']}) | {seconds:.0f}")  # fmt: skip
            counts = next(x for x in manifest["steps"] if x["op"] == "robustft_relabel")["stats"]["counts"]
            results.append({"rate": rate, **s, "clean_only_accuracy": round(clean_acc, 4), "relabel": counts})
    print(json.dumps(results))
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
