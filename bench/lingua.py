"""LLMLingua-2 end to end on the embedded models, and against the ``llmlingua`` package.

1. Labels: SmolLM2-135M-Instruct (the teacher) compresses --train GSM8K training questions under the
   paper's rules (``lingua_label``); the paper's filters (``lingua_filter``) drop the worst.
2. Classifier: MiniLM tuned as the keep/drop token classifier on the survivors (--epochs, --lr);
   held-out word accuracy against the majority baseline.
3. What compression costs: on --test GSM8K test questions, the NLL of the reference solution under
   SmolLM2 given the full question and given the question cut to 1/2 and 1/3 of its tokens by the
   classifier, by random deletion and by stop-word deletion at the same rate (same selection code,
   other scores). Lower is better; the full question is the floor.
4. Against the reference: the same checkpoint loaded in ``llmlingua.PromptCompressor`` compresses the
   test questions at rate 0.5; the share of questions with the same kept words, and the time of both.

    python -m bench.lingua [--train 200] [--test 100] [--epochs 3] [--lr 5e-5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import peak_rss_mib

GSM8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"


def gsm8k(split: str, n: int) -> list[dict]:
    import os

    root = Path(os.environ.get("FLYWHEEL_SHARED_DATA", GSM8K.parent)) / "gsm8k"
    with open(root / f"{split}.jsonl") as f:
        return [json.loads(line) for _, line in zip(range(n), f, strict=False)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-tokens", type=int, default=160)
    args = ap.parse_args()

    import numpy as np
    import pyarrow as pa

    from dataflywheel.data import schema as S
    from dataflywheel.models import embedded
    from dataflywheel.models.client import Model
    from dataflywheel.models.hf import HFBackend
    from dataflywheel.ops.base import OpContext
    from dataflywheel.ops.distill.lingua import LABELS, LinguaFilter, LinguaLabel
    from dataflywheel.recipe.models import ModelSpec
    from dataflywheel.train import lingua as L

    start = time.perf_counter()
    train = gsm8k("train", args.train)
    test = gsm8k("test", args.test)
    table = pa.Table.from_pylist(
        [
            {S.ID: f"t{i}", S.MESSAGES: [{"role": "user", "content": r["question"]}]}
            for i, r in enumerate(train)
        ]
    )
    teacher = Model("teacher", ModelSpec(backend="hf", model=embedded.SMOLLM2, device="cpu", cache="off"))
    ctx = OpContext(models={"teacher": teacher})
    t = time.perf_counter()
    labelled = LinguaLabel({"model": "teacher", "max_tokens": args.max_tokens}, ctx=ctx).map(table)
    label_s = time.perf_counter() - t
    rows = labelled.to_pylist()
    ok = [r for r in rows if r[LABELS] is not None]
    sel = LinguaFilter({}).select(labelled)
    kept = [rows[i] for i in sel.indices]
    print(f"labels: {len(ok)}/{len(rows)} questions labelled by the teacher in {label_s:.0f} s")
    for name, col in (("variation rate", "lingua_variation_rate"), ("alignment gap", "lingua_alignment_gap"),
                      ("compression (words)", "lingua_compression_rate")):  # fmt: skip
        v = np.array([r[col] for r in ok])
        print(f"  {name:20s} mean {v.mean():.3f}  median {np.median(v):.3f}")
    print(f"  kept share of words  {np.mean([np.mean(r[LABELS]) for r in ok]):.3f}")
    print(f"  after the filters: {len(kept)} questions")

    workdir = Path(tempfile.mkdtemp(prefix="bench-lingua-"))
    ckpt = workdir / "minilm-bert-base-multilingual-cased"  # the folder name llmlingua reads BERT tokens by
    words = [L.split_words(r[S.MESSAGES][0]["content"]) for r in kept]
    metrics = L.train_classifier(
        str(embedded.resolve(embedded.MINILM)), words, [r[LABELS] for r in kept], ckpt,
        epochs=args.epochs, lr=args.lr, batch_size=10, eval_fraction=0.1,
    )  # fmt: skip
    majority = max(metrics["heldout_keep_share"], 1 - metrics["heldout_keep_share"])
    print(
        f"classifier: {metrics['steps']} steps in {metrics['seconds']:.0f} s, "
        f"loss {metrics['loss_first']:.3f} -> {metrics['loss_last']:.3f}; "
        f"held-out word accuracy {metrics['heldout_accuracy']:.3f}"
        f" (majority {majority:.3f}), keep-F1 {metrics['heldout_keep_f1']:.3f}"
    )

    comp = L.Compressor(str(ckpt))
    questions = [r["question"] for r in test]
    answers = [r["answer"] for r in test]
    scorer = HFBackend(embedded.SMOLLM2, device="cpu")
    count = scorer.tokenizer

    def nll(qs: list[str]) -> float:
        scored = scorer.logprobs([[{"role": "user", "content": q}] for q in qs], answers)
        lps = [lp for s in scored for lp in s.logprobs]
        return -sum(lps) / len(lps)

    def target_tokens(qs: list[str]) -> int:
        return sum(len(count.encode(q, add_special_tokens=False)) for q in qs)

    full_tokens = target_tokens(questions)
    print(f"\nNLL of the GSM8K reference solution given the question ({len(test)} questions, SmolLM2):")
    print(f"  {'condition':24s} {'NLL':>7s} {'SmolLM2 prompt tokens kept':>27s}")
    print(f"  {'full question':24s} {nll(questions):7.3f} {1.0:27.3f}")
    for rate, label in ((0.5, "2x"), (1 / 3, "3x")):
        for method, scores in (("llmlingua-2", None), ("random", L.random_scores(0)),
                               ("stop words", L.stopword_scores(0))):  # fmt: skip
            cut = [c.text for c in comp.compress(questions, rate, scores=scores)]
            kept_share = target_tokens(cut) / full_tokens
            print(f"  {method + ' ' + label:24s} {nll(cut):7.3f} {kept_share:27.3f}")
    scorer.close()

    import llmlingua.prompt_compressor as ref_module

    tok = comp.tok

    class Count:  # llmlingua counts GPT-3.5 tokens with tiktoken (a download); both count the classifier's
        def encode(self, word):
            return tok.encode(word, add_special_tokens=False)

    ref_module.tiktoken.encoding_for_model = lambda name: Count()
    ref = ref_module.PromptCompressor(model_name=str(ckpt), use_llmlingua2=True, device_map="cpu")
    ref.compress_prompt_llmlingua2(questions[:2], rate=0.5)  # warm both up
    comp.compress(questions[:2], 0.5)
    t = time.perf_counter()
    theirs = [ref.compress_prompt_llmlingua2([q], rate=0.5, return_word_label=True) for q in questions]
    ref_s = time.perf_counter() - t
    t = time.perf_counter()
    ours = comp.compress(questions, 0.5)
    ours_s = time.perf_counter() - t
    same = comparable = 0
    for q, th, o in zip(questions, theirs, ours, strict=True):
        pairs = [p.rsplit(" ", 1) for p in th["fn_labeled_original_prompt"].split("\t\t|\t\t")]
        if [w for w, _ in pairs] != [w.lower() for w in L.split_words(q)]:
            continue
        comparable += 1
        same += [lab == "1" for _, lab in pairs] == o.keep
    print(
        f"\nagainst llmlingua 0.2.2 (same checkpoint, rate 0.5, "
        f"{len(questions)} questions): same kept words {same}/{comparable} (word splits equal in "
        f"{comparable}); llmlingua {ref_s:.2f} s, ours {ours_s:.2f} s, ratio {ref_s / ours_s:.1f}x"
    )
    print(f"\npeak RSS {peak_rss_mib():.0f} MiB; total {time.perf_counter() - start:.0f} s")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
