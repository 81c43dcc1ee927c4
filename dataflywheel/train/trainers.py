"""SFT and DPO with TRL, LoRA through PEFT; the result is saved as a plain (merged) transformers
checkpoint, so `hf` recipes, `flywheel serve` and every other tool load it directly.

What makes it fast (bench/train_throughput.py measures each against a plain PyTorch + PEFT loop and TRL's
defaults): bf16 autocast where the hardware multiplies bf16 natively (a CUDA GPU, or a CPU with AMX: 5.7x
fp32's matmul throughput on this project's 2-core machine), no activation checkpointing unless asked for
(TRL turns it on by default; it recomputes the forward pass to save memory a small model does not need),
batches of rows of similar length (less padding), and DPO's reference log-probabilities computed once
before training instead of in every epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataflywheel.errors import FlywheelError
from dataflywheel.train.tokenize import sft_features


@dataclass
class TrainSettings:
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0  # PEFT's default; on CPU its masks cost 20-40% of a step (BENCHMARKS.md)
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    epochs: float = 1.0
    max_steps: int | None = None
    lr: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    warmup_ratio: float = 0.03
    seed: int = 0
    beta: float = 0.1  # DPO
    precision: str = "auto"  # auto | float32 | bfloat16 (mixed: fp32 weights, bf16 matmuls)
    gradient_checkpointing: bool = False
    group_by_length: bool = True


def use_bf16(precision: str) -> bool:
    """Mixed bf16 when asked, or under "auto" where bf16 matmuls are native: a CUDA GPU with bf16, or a
    CPU with AMX tiles (emulated bf16 on older CPUs is slower than fp32)."""
    import torch

    if precision == "float32":
        return False
    if precision == "bfloat16":
        return True
    if precision != "auto":
        raise FlywheelError(f"precision '{precision}': expected auto, float32 or bfloat16")
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(amx and amx())


def _load(base: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(base, dtype="float32")
    return model, tok


def _peft(s: TrainSettings):
    if not s.lora:
        return None
    return lora_config(s.lora_r, s.lora_alpha, s.lora_dropout, s.lora_targets)


def lora_config(r: int, alpha: int, dropout: float, targets: Sequence[str]):
    """A PEFT LoRA config for a causal LM (training here, gradient features in lib.gradients)."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _fit(trainer_cls, model, config, dataset, tok, s: TrainSettings, progress=None, setup=None):
    """A TRL trainer built and run: the model (with LoRA when set), its config and data; the real
    (unpadded) tokens of every batch counted, progress reported to ``progress(done, total, text)``.
    ``setup(trainer)`` changes the built trainer before it trains (a collator, a ``custom_loss``)."""
    import torch

    # DPO computes the reference log-probabilities while it is built, outside the training loop's autocast
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16(s.precision)), _plain_lm_head_on_cpu():
        trainer = _faster(trainer_cls)(
            model=model, args=config, train_dataset=dataset, processing_class=tok, peft_config=_peft(s)
        )
    trainer.group_by_length = s.group_by_length
    meter = _Meter(progress)
    trainer.data_collator = _Counting(trainer.data_collator, meter)
    trainer.add_callback(meter.callback())
    if setup is not None:
        setup(trainer)
    start = time.perf_counter()
    with _frozen_in_bf16(trainer.model, s.lora and use_bf16(s.precision)):
        _quiet(trainer).train()
    meter.seconds = time.perf_counter() - start
    return trainer, meter


@contextlib.contextmanager
def _frozen_in_bf16(model, enabled: bool):
    """While LoRA trains under bf16 autocast, the frozen linear layers hold their weights in bf16.

    Autocast casts a frozen fp32 weight to bf16 in every forward pass (it caches casts only of weights
    that require grad); casting once up front gives the matmuls the same bf16 operands, so the losses do
    not change, and a step skips reading the fp32 weights and writing their copies. The embedding (and an
    LM head tied to it) stays fp32, so the residual stream is fp32 as under autocast alone. The fp32
    weights come back afterwards: the adapters merge into the original weights."""
    import torch

    kept: list[tuple[Any, Any]] = []
    if enabled:
        embedding = getattr(model.get_input_embeddings(), "weight", None)
        for module in model.modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            w = module.weight
            if not w.requires_grad and w is not embedding and w.dtype == torch.float32:
                kept.append((w, w.data))
                w.data = w.data.to(torch.bfloat16)
    try:
        yield len(kept)
    finally:
        for w, data in kept:
            w.data = data


def _faster(trainer_cls):
    """The TRL trainer with batches of similar length and, for SFT, a plain cross-entropy loss."""
    from trl import SFTTrainer

    class Faster(trainer_cls):
        group_by_length = True
        tokens_per_batch: float | None = None  # SFT in length buckets: mean labelled tokens a batch
        custom_loss = None  # SFT: custom_loss(model, inputs, count) replaces the cross-entropy (distill)

        def _get_train_sampler(self, train_dataset=None):
            data = train_dataset if train_dataset is not None else self.train_dataset
            if not self.group_by_length:
                return super()._get_train_sampler(train_dataset)
            ids = [c for c in data.column_names if c == "input_ids" or c.endswith("_ids")]
            lengths = [sum(len(r[c]) for c in ids) for r in data.select_columns(ids)]
            if "labels" in data.column_names:
                labelled = sum(sum(t != -100 for t in r[1:]) for r in data["labels"])
                self.tokens_per_batch = labelled / math.ceil(len(lengths) / self.args.train_batch_size)
            return LengthBuckets(lengths, self.args.train_batch_size, self.args.seed)

        if issubclass(trainer_cls, SFTTrainer):

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                # Length buckets make a batch of short rows few tokens and a batch of long rows many: divided
                # by its own count, a token of a short row would weigh more than one of a long row. Divided by
                # the average count instead, every token weighs the same, as in randomly mixed batches.
                if self.tokens_per_batch is not None:
                    num_items_in_batch = self.tokens_per_batch * self.args.gradient_accumulation_steps
                if self.custom_loss is not None:
                    with self.accelerator.autocast():
                        loss = self.custom_loss(model, inputs, num_items_in_batch)
                    return (loss, None) if return_outputs else loss
                if inputs["input_ids"].device.type != "cpu":  # TRL's fused head: Triton, no full logits
                    return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
                with self.accelerator.autocast():
                    loss = sft_loss(model, inputs, num_items_in_batch)
                return (loss, None) if return_outputs else loss

    Faster.__name__ = Faster.__qualname__ = f"Fast{trainer_cls.__name__}"
    return Faster


@contextlib.contextmanager
def _plain_lm_head_on_cpu():
    """While a DPO trainer is built, route TRL's fused LM head through plain ops when it runs on a CPU.

    TRL's head (``fused_lm_head=True``) projects every position in vocabulary tiles and recomputes them in
    the backward pass; without Triton it scores prompt and padding positions too (its comment: fixed shapes
    for compilers). On CPU that was most of a DPO step and of its reference pass. The plain path projects
    only the labelled positions once, with the same outputs: per-token log-probabilities (with gradient),
    and entropy, mean logit and top-1 (for the logs). On a GPU, and in any call it does not cover, TRL's
    own head runs. If a TRL release stops importing ``add_fused_lm_head`` by name, this changes nothing."""
    import trl.trainer.dpo_trainer as dpo

    original = getattr(dpo, "add_fused_lm_head", None)
    if original is None:
        yield
        return

    def install(model, *args, **kwargs):
        original(model, *args, **kwargs)
        temperature = kwargs.get("temperature", args[0] if args else 1.0)
        if temperature == 1.0 and not kwargs.get("cast_lm_head_to_fp32"):
            _route_plain(model)

    dpo.add_fused_lm_head = install
    try:
        yield
    finally:
        dpo.add_fused_lm_head = original


def _route_plain(model) -> None:
    import types

    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    fused = model.forward

    def forward(self, *args, fused_lm_head=False, labels=None, num_items_in_batch=None, **kw):
        covered = fused_lm_head and labels is not None and not kw.get("shift_labels")
        covered = covered and not kw.get("output_router_logits")
        if not covered or self.get_output_embeddings().weight.device.type != "cpu":
            kw.update(fused_lm_head=fused_lm_head, labels=labels, num_items_in_batch=num_items_in_batch)
            return fused(*args, **kw)
        logits, target, mask = labelled_logits(self, labels, *args, **kw)
        logits = logits.float()
        logp = logits.log_softmax(-1)
        token_logp = logp.gather(1, target[:, None]).squeeze(1)
        with torch.no_grad():
            entropy = -(logp.exp() * logp).sum(-1)
            mean_logits = logits.mean(-1)
            is_top1 = logits.argmax(-1) == target

        def spread(x):
            return x.new_zeros(mask.shape).masked_scatter(mask, x)

        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-token_logp.sum() / count,
            log_probs=spread(token_logp),
            entropy=spread(entropy),
            log_sum_sq_probs=None,
            mean_logits=spread(mean_logits),
            is_top1=spread(is_top1),
            label_mask=mask,
        )

    model.forward = types.MethodType(forward, model)


def labelled_logits(causal_lm, labels, *args, **kwargs):
    """The LM head applied only where a next-token label is set: (logits [N, V], their targets [N], the
    mask of those positions [B, T-1]). ``causal_lm`` is the *ForCausalLM model (LoRA layers injected)."""
    kwargs["use_cache"] = False
    hidden = causal_lm.base_model(*args, **kwargs).last_hidden_state[:, :-1]
    labels = labels[:, 1:].to(hidden.device)
    mask = labels != -100
    return causal_lm.get_output_embeddings()(hidden[mask]), labels[mask], mask


def sft_loss(model, inputs: dict, num_items_in_batch=None):
    """Next-token cross-entropy over the labelled positions, summed and divided by the batch's labelled
    tokens (over all accumulation steps when given): TRL's SFT loss. The LM head runs only on labelled
    positions; TRL's chunked log-prob kernel (written for GPUs: it recomputes every vocabulary tile in the
    backward pass and also computes entropy and accuracy for its logs) took 44% of a step on CPU. Used on
    CPU; on a GPU TRL's kernel runs (it never holds the labelled positions' full logits)."""
    import torch
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kwargs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
    logits, target, mask = labelled_logits(base, inputs["labels"], **kwargs)
    total = F.cross_entropy(logits.float(), target, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else mask.sum()
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


class LengthBuckets:
    """Training order for batches of rows of similar length: the rows shuffled, sorted by length within
    windows of ``window`` batches, cut into batches, and the batches shuffled again, so padding nearly
    vanishes while which rows meet and the order of batches stay random (a fresh order every epoch).
    transformers' LengthGroupedSampler sorts within windows of a quarter of the data at most (no grouping
    at all under 16 batches) and always puts the longest batch first."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, window: int = 64):
        import torch

        self.lengths, self.batch_size, self.window = list(lengths), batch_size, window
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch

        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        span = self.window * self.batch_size
        batches = []
        for lo in range(0, len(order), span):
            part = sorted(order[lo : lo + span], key=lambda i: self.lengths[i])
            batches += [part[k : k + self.batch_size] for k in range(0, len(part), self.batch_size)]
        # only the last batch may be short: the data loader cuts this stream into batch_size pieces
        tail = [batches.pop()] if batches and len(batches[-1]) < self.batch_size else []
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield from batches[b]
        for b in tail:
            yield from b


class _Counting:
    """Wraps a data collator: counts the real tokens (attention mask) of each batch it builds."""

    def __init__(self, collator, meter: _Meter):
        self.collator, self.meter = collator, meter

    def __call__(self, examples):
        batch = self.collator(examples)
        mask = batch.get("attention_mask")
        self.meter.tokens += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
        self.meter.padded += int(batch["input_ids"].numel())
        return batch


class _Meter:
    """Tokens and time of a training run, and its progress: step, loss, tokens per second, time left."""

    def __init__(self, progress=None):
        self.progress, self.tokens, self.padded, self.seconds, self.loss = progress, 0, 0, 0.0, None
        self._start = time.perf_counter()

    def begin(self) -> None:
        self._start = time.perf_counter()
        self.tokens = self.padded = 0  # DPO's reference pass (before training) went through the collator

    def step(self, done: int, total: int) -> None:
        if self.progress is None:
            return
        spent = time.perf_counter() - self._start
        left = spent / max(done, 1) * max(total - done, 0)
        loss = f"loss {self.loss:.3f} · " if self.loss is not None else ""
        self.progress(done, total, f"{loss}{self.tokens / max(spent, 1e-9):.0f} tok/s · {left:.0f} s left")

    def callback(self):
        """The trainer callback that feeds this meter."""
        from transformers import TrainerCallback

        meter = self

        class Report(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                meter.begin()

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    meter.loss = float(logs["loss"])

            def on_step_end(self, args, state, control, **kwargs):
                meter.step(state.global_step, state.max_steps)

        return Report()


def _common(s: TrainSettings, out: Path) -> dict[str, Any]:
    import torch

    args: dict[str, Any] = dict(
        output_dir=str(out / "trainer"),
        num_train_epochs=s.epochs,
        learning_rate=s.lr,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum,
        warmup_steps=s.warmup_ratio,
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=s.seed,
        bf16=use_bf16(s.precision),
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        dataloader_num_workers=0,
        activation_checkpointing=s.gradient_checkpointing,
    )
    if s.max_steps:
        args["max_steps"] = s.max_steps
    return args


def _quiet(trainer):
    """The engine shows its own progress; the per-step log dicts stay in the trainer state (losses)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def _save(trainer, tokenizer, out: Path) -> float:
    """Merge the adapters (if any) and save; the seconds it took."""
    start = time.perf_counter()
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out / "trainer", ignore_errors=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return round(time.perf_counter() - start, 2)


def _losses(trainer, key: str = "loss") -> list[float]:
    return [round(float(h[key]), 5) for h in trainer.state.log_history if key in h]


def _throughput(meter: _Meter, s: TrainSettings) -> dict[str, Any]:
    return {
        "train_tokens": meter.tokens,
        "padded_tokens": meter.padded,  # the batches' full size, padding included
        "train_seconds": round(meter.seconds, 2),
        "tokens_per_second": round(meter.tokens / meter.seconds, 1) if meter.seconds else None,
        "bf16": use_bf16(s.precision),
        "gradient_checkpointing": s.gradient_checkpointing,
        "group_by_length": s.group_by_length,
    }


def train_sft(base: str, conversations: list[list[dict]], out: Path, s: TrainSettings, progress=None) -> dict:
    """LoRA (or full) SFT with the loss on assistant tokens only; saves a merged checkpoint at `out`."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tok = _load(base)
    feats = [f for f in (sft_features(tok, c, s.max_length) for c in conversations) if f is not None]
    if not feats:
        raise FlywheelError("sft: no conversation has an assistant turn to learn from")
    out.mkdir(parents=True, exist_ok=True)
    config = SFTConfig(**_common(s, out), max_length=s.max_length, packing=False)
    trainer, meter = _fit(SFTTrainer, model, config, Dataset.from_list(feats), tok, s, progress)
    return {
        "examples": len(feats),
        "steps": trainer.state.global_step,
        "losses": _losses(trainer),
        **_throughput(meter, s),
        "save_seconds": _save(trainer, tok, out),
    }


def train_dpo(base: str, pairs: list[dict], out: Path, s: TrainSettings, progress=None) -> dict:
    """DPO from prompt/chosen/rejected conversations (TRL); with LoRA the frozen base is the reference."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tok = _load(base)
    if not pairs:
        raise FlywheelError("dpo: no preference pairs")
    out.mkdir(parents=True, exist_ok=True)
    config = DPOConfig(
        **_common(s, out),
        beta=s.beta,
        max_length=s.max_length,
        precompute_ref_log_probs=True,
        remove_unused_columns=False,  # keeps the "length" column the length-grouped sampler reads
    )
    if s.group_by_length:  # the reference pass batches rows in dataset order: similar lengths pad less
        pairs = sorted(pairs, key=_chars)
    trainer, meter = _fit(DPOTrainer, model, config, Dataset.from_list(pairs), tok, s, progress)
    stats = {
        "pairs": len(pairs),
        "steps": trainer.state.global_step,
        "losses": _losses(trainer),
        "reward_margins": _losses(trainer, "rewards/margins"),
        **_throughput(meter, s),
    }
    stats["save_seconds"] = _save(trainer, tok, out)
    return stats


def _chars(pair: dict) -> int:
    return sum(len(str(m.get("content") or "")) for k in ("prompt", "chosen", "rejected") for m in pair[k])
