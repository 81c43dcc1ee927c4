"""Pruning with recovery: first-order Taylor against magnitude at the same size, on SmolLM2-135M.

Both prune SmolLM2-135M-Instruct to --target of its parameters (whole GQA attention groups and MLP
channels, the same sizes for both), Taylor from the gradient on --calibration AlpacaEval rows
(instruction + text-davinci-003 answer); each pruned model is then recovered with LoRA SFT on --train
other AlpacaEval rows (same rows, steps and seed; LoRA r 16 on every linear layer, as LLM-Pruner).
Measured on --heldout other rows: the NLL of the reference answers (and its perplexity), parameters and
size on disk, before pruning, after pruning and after recovery. One run, same machine.

    python -m bench.prune [--target 0.7] [--calibration 32] [--train 128] [--heldout 32] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from bench.common import alpaca_eval_pairs, peak_rss_mib


def nll(path: str, rows: list[dict]) -> float:
    from dataflywheel.models.hf import HFBackend

    model = HFBackend(path, device="cpu")
    scored = model.logprobs([r["messages"][:1] for r in rows], [r["messages"][1]["content"] for r in rows])
    lps = [lp for s in scored for lp in s.logprobs]
    model.close()
    return -sum(lps) / len(lps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=float, default=0.7)
    ap.add_argument("--calibration", type=int, default=32)
    ap.add_argument("--train", type=int, default=128)
    ap.add_argument("--heldout", type=int, default=32)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument(
        "--lora-targets",
        default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        help="LoRA modules of the recovery (LLM-Pruner: every linear layer)",
    )
    args = ap.parse_args()

    from dataflywheel.models import embedded
    from dataflywheel.train.prune import prune_model
    from dataflywheel.train.trainers import TrainSettings, train_sft

    start = time.perf_counter()
    pairs = [(q, a) for q, a in alpaca_eval_pairs(805) if len(a) < 1200]

    def rows(chunk):
        return [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in chunk
        ]

    calib = rows(pairs[: args.calibration])
    train = rows(pairs[100 : 100 + args.train])
    held = rows(pairs[500 : 500 + args.heldout])
    base = str(embedded.resolve(embedded.SMOLLM2))
    base_nll = nll(base, held)
    print(f"target {args.target}: {len(calib)} calibration, {len(train)} recovery, {len(held)} held-out rows")
    print("model                 parameters  MB on disk  held-out NLL  perplexity  seconds")
    size = sum(p.stat().st_size for p in Path(base).glob("*.safetensors")) or float("nan")
    ppl = math.exp(base_nll)
    print(f"{'SmolLM2-135M':<21} {134_515_008:>10,}  {size / 1e6:>10.0f}  {base_nll:>12.4f}  {ppl:>10.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-prune-") as tmp:
        for importance in ("taylor", "magnitude"):
            t0 = time.perf_counter()
            pruned = Path(tmp) / importance
            stats = prune_model(base, [r["messages"] for r in calib], pruned, args.target, importance)
            pruned_nll = nll(str(pruned), held)
            print(
                f"{importance + ' pruned':<21} {stats['parameters_after']:>10,}  "
                f"{stats['bytes_on_disk'] / 1e6:>10.0f}  {pruned_nll:>12.4f}  {math.exp(pruned_nll):>10.2f}  "
                f"{time.perf_counter() - t0:>7.0f}"
            )
            t0 = time.perf_counter()
            s = TrainSettings(
                epochs=args.epochs, batch_size=8, lr=5e-4, lora_r=16, max_length=512, seed=0,
                lora_targets=tuple(args.lora_targets.split(",")),
            )  # fmt: skip
            recovered = Path(tmp) / f"{importance}-recovered"
            train_sft(str(pruned), [r["messages"] for r in train], recovered, s)
            rec_nll = nll(str(recovered), held)
            print(
                f"{'  + LoRA recovery':<21} {stats['parameters_after']:>10,}  {'':>10}  {rec_nll:>12.4f}  "
                f"{math.exp(rec_nll):>10.2f}  {time.perf_counter() - t0:>7.0f}"
            )
            print(
                "   ", json.dumps({k: stats[k] for k in ("kv_heads", "attention_heads", "intermediate_size")})
            )
    print(f"peak RSS {peak_rss_mib():.0f} MiB, wall {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
