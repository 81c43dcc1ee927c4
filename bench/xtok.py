"""Distillation across tokenizers: ULD, MinED and DSKD-CMA against cross-entropy alone.

The teacher is SmolLM2-135M-Instruct (BPE, 49,152 tokens); the student is ``embedded:minilm-student``
(MiniLM's WordPiece vocabulary of 30,522 tokens and its embeddings under 4 random Llama layers, 21M
parameters): a real pair with different vocabularies, offline. The teacher answers --train AlpacaEval
instructions (greedy, --max-tokens); the student is trained on those rows for the same --steps (batch 8,
lr 5e-4, seed 0, full fine-tuning) with cross-entropy alone (sequence-level distillation) and with each
KD loss mixed in at kd_weight 0.5 (ULD and MinED at temperature 1, DSKD at 2.0 as its paper). Measured:
the student's NLL of the teacher's answers to --heldout other instructions (per student token), and
the seconds each training took. Same data, seed and machine, one run.

    python -m bench.xtok [--train 200] [--heldout 40] [--steps 50] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import alpaca_eval_pairs, peak_rss_mib, teacher_answers


def heldout_nll(path: str, convs: list[list[dict]]) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dataflywheel.train.xtok import content_positions, row_features

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    total = count = 0.0
    for conv in convs:
        f = row_features(tok, conv, 512)
        at = torch.tensor(content_positions(f["labels"]))
        ids = torch.tensor([f["input_ids"]])
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0, at].float(), -1)
        total -= lp.gather(-1, ids[0, at + 1][:, None]).sum().item()
        count += len(at)
    return total / count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--heldout", type=int, default=40)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--losses", default="ce,uld,mined,dskd", help="which conditions to run")
    args = ap.parse_args()

    from dataflywheel.models import embedded
    from dataflywheel.models.client import Model
    from dataflywheel.recipe.models import ModelSpec
    from dataflywheel.train.xtok import train_xtok, vocab_map

    start = time.perf_counter()
    teacher = Model("teacher", ModelSpec(backend="hf", model=embedded.SMOLLM2, device="cpu"))
    pairs = alpaca_eval_pairs(805)
    train_q = [q for q, _ in pairs[::3][: args.train]]
    held_q = [q for q, _ in pairs[1::3][: args.heldout]]

    train, held = (teacher_answers(teacher, qs, args.max_tokens) for qs in (train_q, held_q))
    teacher_path = teacher.backend.path
    teacher.backend.close()
    student = str(embedded.resolve(embedded.MINILM_STUDENT))
    elapsed = time.perf_counter() - start
    print(f"teacher answers: {len(train)} training, {len(held)} held-out; {elapsed:.0f} s")
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    tea2stu = vocab_map(AutoTokenizer.from_pretrained(teacher_path), AutoTokenizer.from_pretrained(student))
    print(f"MinED vocabulary map: {len(tea2stu)} teacher tokens in {time.perf_counter() - t0:.1f} s")
    print(f"\n{'student':34s} {'held-out NLL':>12s} {'train s':>8s} {'x CE':>5s}  notes")
    print(f"{'untrained':34s} {heldout_nll(student, held):12.4f} {'-':>8s} {'-':>5s}")
    ce_seconds = None
    conditions = [
        ("cross-entropy only (sequence KD)", "ce", 1.0),
        ("ULD + CE", "uld", 1.0),
        ("MinED + CE", "mined", 1.0),
        ("DSKD-CMA + CE", "dskd", 2.0),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-xtok-") as tmp:
        for name, loss, temperature in [c for c in conditions if c[1] in args.losses.split(",")]:
            out = Path(tmp) / loss
            t0 = time.perf_counter()
            stats = train_xtok(
                student, teacher_path, train, out, loss=loss, kd_weight=0.5, temperature=temperature,
                max_steps=args.steps, batch_size=8, lr=5e-4, seed=0,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            note = f"CE {stats['ce_first']:.2f} -> {stats['ce_last']:.2f}"
            if loss != "ce":
                note += f", KD {stats['kd_first']:.3f} -> {stats['kd_last']:.3f}"
            if loss == "mined":
                note += f", {stats['aligned_share']:.0%} of positions aligned"
            ce_seconds = seconds if loss == "ce" else ce_seconds
            ratio = f"{seconds / ce_seconds:5.2f}" if ce_seconds else f"{'-':>5s}"
            print(f"{name:34s} {heldout_nll(str(out), held):12.4f} {seconds:8.0f} {ratio}  {note}")
    print(f"\npeak RSS {peak_rss_mib():.0f} MiB; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
