"""Training throughput: the `sft` step against a plain PyTorch + PEFT loop, the `dpo` step against TRL's
DPOTrainer with its defaults, on the same rows with the same settings, in one run.

    python -m bench.train_throughput                      # sft and dpo, seeds 0 and 1
    python -m bench.train_throughput --parts sft --rows 32 --seeds 0

SFT: AlpacaEval instructions with text-davinci-003's answers (LoRA r 16 on q/k/v/o, lr 2e-4, batch 4,
1 epoch, at most 384 tokens, linear decay after 3% warm-up in every configuration). Configurations:
``step`` (train_sft as the recipe step runs it: load, train, merge, save), ``step-old`` (the same with
TRL's defaults this project used before: fp32, activation checkpointing, rows in random order), ``loop``
(a plain PyTorch + PEFT loop in fp32, rows shuffled, padded to the longest in the batch) and
``loop-bf16`` (the same loop under bf16 autocast); ``step-random`` is the step with rows batched in
random order (no length buckets). DPO: GPT-4's AlpacaEval preferences between
text-davinci-003 and Alpaca-7B answers (lr 5e-5, beta 0.1, batch 4, at most 384 tokens): ``dpo-step``
(train_dpo) against ``dpo-trl`` (DPOTrainer with DPOConfig's defaults for everything not named).

Each configuration runs in its own process, so peak RSS is its own. Throughput counts real (unpadded)
tokens; held-out quality: the reference answers' NLL on held-out rows (SFT), the implicit-reward
preference accuracy on held-out pairs (DPO). A second seed shows the run-to-run noise.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import SHARED, alpaca_eval_pairs, peak_rss_mib

BASE = "embedded:smollm2-135m-instruct"
LORA = dict(r=16, alpha=32, dropout=0.05, targets=("q_proj", "k_proj", "v_proj", "o_proj"))


def sft_rows(n: int, heldout: int) -> tuple[list[list[dict]], list[list[dict]]]:
    convs = [
        [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        for q, a in alpaca_eval_pairs(n + heldout)
    ]
    return convs[:n], convs[n:]


def dpo_rows(n: int, heldout: int) -> tuple[list[dict], list[dict]]:
    path = SHARED / "alpaca_eval" / "annotations_alpaca_eval_gpt4" / "alpaca-7b.json"
    pairs = []
    for r in json.loads(path.read_text()):
        if str(r["preference"]) not in ("1", "2") or not r["output_1"] or not r["output_2"]:
            continue
        win, lose = (r["output_1"], r["output_2"])
        if str(r["preference"]) == "2":
            win, lose = lose, win
        pairs.append(
            {
                "prompt": [{"role": "user", "content": r["instruction"]}],
                "chosen": [{"role": "assistant", "content": win}],
                "rejected": [{"role": "assistant", "content": lose}],
            }
        )
        if len(pairs) == n + heldout:
            break
    return pairs[:n], pairs[n:]


# ------------------------------------------------------------------------------------------ configurations
def settings(seed: int, max_length: int, **extra):
    from dataflywheel.train.trainers import TrainSettings

    return TrainSettings(
        lora_r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        lora_targets=LORA["targets"],
        batch_size=4,
        max_length=max_length,
        seed=seed,
        **extra,
    )


def base_path() -> str:
    from dataflywheel.models import embedded

    return str(embedded.resolve(BASE))


def run_step(rows, out: Path, seed: int, max_length: int, variant: str) -> dict:
    from dataflywheel.train.trainers import train_sft

    extra = {
        "step": {},
        "step-old": dict(precision="float32", gradient_checkpointing=True, group_by_length=False),
        "step-random": dict(group_by_length=False),
    }[variant]
    stats = train_sft(base_path(), rows, out, settings(seed, max_length, lr=2e-4, **extra))
    return {k: stats[k] for k in ("train_tokens", "train_seconds", "steps")}


def run_loop(rows, out: Path, seed: int, max_length: int, bf16: bool) -> dict:
    """The plain loop a user would write: PEFT LoRA, AdamW, linear schedule, shuffled padded batches."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup

    from dataflywheel.train.tokenize import sft_features
    from dataflywheel.train.trainers import lora_config

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base_path())
    model = AutoModelForCausalLM.from_pretrained(base_path(), dtype="float32")
    model = get_peft_model(model, lora_config(LORA["r"], LORA["alpha"], LORA["dropout"], LORA["targets"]))
    feats = [f for f in (sft_features(tok, c, max_length) for c in rows) if f is not None]
    order = torch.randperm(len(feats), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = [order[i : i + 4] for i in range(0, len(order), 4)]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, math.ceil(0.03 * len(batches)), len(batches))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.train()
    tokens, start = 0, time.perf_counter()
    for b in batches:
        width = max(len(feats[i]["input_ids"]) for i in b)
        ids = torch.full((len(b), width), pad)
        labels = torch.full((len(b), width), -100)
        mask = torch.zeros((len(b), width), dtype=torch.long)
        for j, i in enumerate(b):
            n = len(feats[i]["input_ids"])
            ids[j, :n], labels[j, :n], mask[j, :n] = (
                torch.tensor(feats[i]["input_ids"]),
                torch.tensor(feats[i]["labels"]),
                1,
            )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        tokens += int(mask.sum())
    seconds = time.perf_counter() - start
    model.merge_and_unload().save_pretrained(out)
    tok.save_pretrained(out)
    return {"train_tokens": tokens, "train_seconds": round(seconds, 2), "steps": len(batches)}


def run_dpo_step(pairs, out: Path, seed: int, max_length: int) -> dict:
    from dataflywheel.train.trainers import train_dpo

    stats = train_dpo(base_path(), pairs, out, settings(seed, max_length, lr=5e-5, beta=0.1))
    return {k: stats[k] for k in ("train_tokens", "train_seconds", "steps")}


def run_dpo_trl(pairs, out: Path, seed: int, max_length: int) -> dict:
    """TRL's DPOTrainer as its documentation shows it: DPOConfig's defaults but for the shared settings."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from dataflywheel.train.trainers import lora_config

    tok = AutoTokenizer.from_pretrained(base_path())
    model = AutoModelForCausalLM.from_pretrained(base_path(), dtype="float32")
    config = DPOConfig(
        output_dir=str(out / "trainer"),
        learning_rate=5e-5,
        beta=0.1,
        per_device_train_batch_size=4,
        num_train_epochs=1,
        max_length=max_length,
        seed=seed,
        report_to=[],
        save_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tok,
        peft_config=lora_config(LORA["r"], LORA["alpha"], LORA["dropout"], LORA["targets"]),
    )
    tokens = [0]
    collate = trainer.data_collator

    def counting(examples):
        batch = collate(examples)
        tokens[0] += int(batch["attention_mask"].sum())
        return batch

    trainer.data_collator = counting
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.model.merge_and_unload().save_pretrained(out)
    tok.save_pretrained(out)
    return {"train_tokens": tokens[0], "train_seconds": round(seconds, 2), "steps": trainer.state.global_step}


# ------------------------------------------------------------------------------------------ quality
def heldout_nll(checkpoint: Path, convs: list[list[dict]]) -> float:
    from dataflywheel.models.hf import HFBackend

    backend = HFBackend(str(checkpoint), device="cpu", dtype="float32")
    scored = backend.logprobs([c[:-1] for c in convs], [c[-1]["content"] for c in convs])
    lps = [lp for s in scored for lp in s.logprobs]
    backend.close()
    return -sum(lps) / len(lps)


def preference_accuracy(checkpoint: Path, pairs: list[dict]) -> float:
    """Share of held-out pairs whose implicit reward (log pi - log pi_ref) is higher for the chosen answer."""
    from dataflywheel.models.hf import HFBackend

    prompts = [p["prompt"] for p in pairs] * 2
    answers = [p["chosen"][0]["content"] for p in pairs] + [p["rejected"][0]["content"] for p in pairs]
    sums = []
    for path in (str(checkpoint), base_path()):
        backend = HFBackend(path, device="cpu", dtype="float32")
        sums.append([sum(s.logprobs) for s in backend.logprobs(prompts, answers)])
        backend.close()
    reward = [a - b for a, b in zip(*sums, strict=True)]
    n = len(pairs)
    return sum(reward[i] > reward[n + i] for i in range(n)) / n


def one(config: str, seed: int, rows: int, heldout: int, max_length: int) -> dict:
    """One configuration in this process: train, save, then measure quality (outside the timed part)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "checkpoint"
        start = time.perf_counter()
        if config.startswith("dpo"):
            train, held = dpo_rows(rows, heldout)
            fn = run_dpo_step if config == "dpo-step" else run_dpo_trl
            stats = fn(train, out, seed, max_length)
        else:
            train, held = sft_rows(rows, heldout)
            if config.startswith("step"):
                stats = run_step(train, out, seed, max_length, config)
            else:
                stats = run_loop(train, out, seed, max_length, bf16=config == "loop-bf16")
        wall = time.perf_counter() - start
        rss = peak_rss_mib()
        quality = preference_accuracy(out, held) if config.startswith("dpo") else heldout_nll(out, held)
    return {
        "config": config,
        "seed": seed,
        **stats,
        "tokens_per_second": round(stats["train_tokens"] / stats["train_seconds"], 1),
        "wall_seconds": round(wall, 1),
        "peak_rss_mib": round(rss),
        "quality": round(quality, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--dpo-rows", type=int, default=48)
    ap.add_argument("--heldout", type=int, default=24)
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--parts", nargs="+", default=["sft", "dpo"], choices=["sft", "dpo"])
    ap.add_argument("--configs", nargs="*", help="only these configurations")
    ap.add_argument(
        "--lora-dropout", type=float, default=0.05, help="LoRA dropout in every configuration (the step's: 0)"
    )
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    LORA["dropout"] = args.lora_dropout
    if args.one:
        config, seed, rows = args.one.split(":")
        print(json.dumps(one(config, int(seed), int(rows), args.heldout, args.max_length)))
        return
    plan = []
    if "sft" in args.parts:
        plan += [(c, args.rows) for c in ("step", "step-old", "step-random", "loop", "loop-bf16")]
    if "dpo" in args.parts:
        plan += [(c, args.dpo_rows) for c in ("dpo-step", "dpo-trl")]
    if args.configs:
        plan = [(c, n) for c, n in plan if c in args.configs]
    results = []
    for seed in args.seeds:
        for config, n in plan:
            cmd = [sys.executable, "-m", "bench.train_throughput", "--one", f"{config}:{seed}:{n}"]
            cmd += ["--heldout", str(args.heldout), "--max-length", str(args.max_length)]
            cmd += ["--lora-dropout", str(args.lora_dropout)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{config} seed {seed} failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(
                f"{r['config']:<10} seed {seed}: {r['train_tokens']:>6} tokens in "
                f"{r['train_seconds']:>7.1f} s "
                f"= {r['tokens_per_second']:>6.1f} tok/s, whole {r['wall_seconds']:>6.1f} s, "
                f"peak RSS {r['peak_rss_mib']:>5} MiB, quality {r['quality']:.4f}",
                flush=True,
            )
    report(results)


def report(results: list[dict]) -> None:
    def mean(config: str, key: str) -> float | None:
        vals = [r[key] for r in results if r["config"] == config]
        return sum(vals) / len(vals) if vals else None

    print("\nmeans over seeds (quality: held-out NLL for SFT, lower is better; preference accuracy for DPO)")
    pairs = (
        ("step", "loop"),
        ("step", "loop-bf16"),
        ("step", "step-old"),
        ("step", "step-random"),
        ("dpo-step", "dpo-trl"),
    )
    for ref, other in pairs:
        a, b = mean(ref, "tokens_per_second"), mean(other, "tokens_per_second")
        if a and b:
            wa, wb = mean(ref, "wall_seconds"), mean(other, "wall_seconds")
            print(
                f"{ref} vs {other}: {a:.1f} / {b:.1f} tok/s = {a / b:.2f}x; whole {wa:.0f} / {wb:.0f} s = "
                f"{wb / wa:.2f}x; quality {mean(ref, 'quality'):.4f} / {mean(other, 'quality'):.4f}"
            )


if __name__ == "__main__":
    main()
