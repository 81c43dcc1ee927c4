"""Logit distillation against cross-entropy alone: a smaller student recovering from the teacher.

The teacher is SmolLM2-135M-Instruct; the student is the same model with every third decoder layer
removed (30 -> 20 layers, a compressed model to recover; same tokenizer). The teacher answers --train
AlpacaEval instructions (greedy, --max-tokens) and its top-k log-probabilities on those answers are stored
(``teacher_topk``); the student is then trained on the same rows for the same steps with cross-entropy
alone (sequence-level distillation: ``kd_weight 0``) and with each divergence (``kd_weight`` 0.5). Measured
on the teacher's answers to --heldout other instructions: the student's NLL of them, and KL(teacher ||
student) over the whole vocabulary at every answer token. Same data, seed and machine, one run.

    python -m bench.distill [--train 64] [--heldout 32] [--epochs 3] [--top-k 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import alpaca_eval_pairs, peak_rss_mib, teacher_answers


def layer_dropped(src: str, out: Path, every: int = 3) -> str:
    """``src`` with every ``every``-th decoder layer removed, saved at ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    keep = [layer for i, layer in enumerate(model.model.layers) if i % every != every - 1]
    for i, layer in enumerate(keep):
        layer.self_attn.layer_idx = i
    model.model.layers = torch.nn.ModuleList(keep)
    model.config.num_hidden_layers = len(keep)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[: len(keep)]
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return str(out)


def teacher_view(teacher, rows: list[dict]) -> list[tuple]:
    """Per held-out row, computed once: (token ids, answer positions, the teacher's log-probs there)."""
    import torch

    from dataflywheel.train.tokenize import sft_features

    out = []
    for r in rows:
        f = sft_features(teacher.tokenizer, r["messages"], 512)
        ids = torch.tensor([f["input_ids"]])
        at = torch.tensor([t for t in range(len(f["labels"]) - 1) if f["labels"][t + 1] != -100])
        with torch.no_grad():
            out.append((ids, at, torch.log_softmax(teacher.model(ids).logits[0, at].float(), -1)))
    return out


def measure(student: str, view: list[tuple]) -> tuple[float, float]:
    """(NLL of the teacher's answer tokens, mean KL(teacher || student)) under the student."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32).eval()
    nll = kl = n = 0.0
    for ids, at, t in view:
        with torch.no_grad():
            s = torch.log_softmax(model(ids).logits[0, at].float(), -1)
        nll -= s.gather(-1, ids[0, at + 1][:, None]).sum().item()
        kl += (t.exp() * (t - s)).sum().item()
        n += len(at)
    return nll / n, kl / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=64)
    ap.add_argument("--heldout", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--top-k", type=int, default=20)
    args = ap.parse_args()

    from dataflywheel.data import io
    from dataflywheel.data import schema as S
    from dataflywheel.models.client import Model
    from dataflywheel.ops import registry
    from dataflywheel.ops.base import OpContext
    from dataflywheel.recipe.models import ModelSpec
    from dataflywheel.train.distill import train_distill
    from dataflywheel.train.trainers import TrainSettings

    start = time.perf_counter()
    teacher = Model("teacher", ModelSpec(backend="hf", model="embedded:smollm2-135m-instruct", device="cpu"))
    pairs = alpaca_eval_pairs(600)
    train_q = [q for q, _ in pairs[::5][: args.train]]
    held_q = [q for q, _ in pairs[2::5][: args.heldout]]

    train_rows, held_rows = (
        [{S.ID: f"q{i}", S.MESSAGES: c} for i, c in enumerate(teacher_answers(teacher, qs, args.max_tokens))]
        for qs in (train_q, held_q)
    )
    op = registry.get("teacher_topk")(
        {"model": "teacher", "top_k": args.top_k, "max_length": 512}, OpContext(models={"teacher": teacher})
    )
    scored = op.map(io.rows_to_table(train_rows)).to_pylist()
    mass = op.stats["topk_mass_sum"] / op.stats["positions"]
    backend = teacher.backend
    print(
        f"teacher: {len(train_rows)} training answers, {len(held_rows)} held-out answers, "
        f"top-{args.top_k} holds {mass:.3f} of its mass; {time.perf_counter() - start:.0f} s"
    )
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        student = layer_dropped(backend.path, Path(tmp) / "student")
        view = teacher_view(backend, held_rows)
        nll, kl = measure(student, view)
        print("student               held-out NLL  KL(teacher||student)  train s")
        print(f"{'untrained (20 layers)':<21} {nll:>12.4f}  {kl:>20.4f}  {'-':>7}")
        nll, kl = measure(backend.path, view)
        print(f"{'teacher (30 layers)':<21} {nll:>12.4f}  {kl:>20.4f}  {'-':>7}")
        conditions = [
            ("cross-entropy only", "jsd", 0.0),
            ("forward KL + CE", "forward_kl", 0.5),
            ("reverse KL + CE", "reverse_kl", 0.5),
            ("JSD(0.5) + CE", "jsd", 0.5),
            ("JSD(0.5) only", "jsd", 1.0),
        ]
        for name, loss, weight in conditions:
            s = TrainSettings(epochs=args.epochs, batch_size=8, lr=5e-4, lora_r=16, max_length=512, seed=0)
            t0 = time.perf_counter()
            out = Path(tmp) / name.replace(" ", "_")
            train_distill(student, scored, out, s, loss=loss, beta=0.5, kd_weight=weight)
            seconds = time.perf_counter() - t0
            nll, kl = measure(str(out), view)
            print(f"{name:<21} {nll:>12.4f}  {kl:>20.4f}  {seconds:>7.1f}")
    print(f"peak RSS {peak_rss_mib():.0f} MiB, wall {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
