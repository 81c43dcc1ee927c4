"""SFT and DPO with TRL, LoRA through PEFT; the result is saved as a plain (merged) transformers
checkpoint, so `hf` recipes, `flywheel serve` and every other tool load it directly."""

from __future__ import annotations

import os
import shutil
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
    lora_dropout: float = 0.05
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


def _fit(trainer_cls, model, config, dataset, tok, s: TrainSettings):
    """A TRL trainer built and run: the model (with LoRA when set), its config and data."""
    trainer = trainer_cls(
        model=model, args=config, train_dataset=dataset, processing_class=tok, peft_config=_peft(s)
    )
    _quiet(trainer).train()
    return trainer


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
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if s.max_steps:
        args["max_steps"] = s.max_steps
    return args


def _quiet(trainer):
    """The engine shows its own progress; the per-step log dicts stay in the trainer state (losses)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def _save(trainer, tokenizer, out: Path) -> None:
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


def _losses(trainer, key: str = "loss") -> list[float]:
    return [round(float(h[key]), 5) for h in trainer.state.log_history if key in h]


def train_sft(base: str, conversations: list[list[dict]], out: Path, s: TrainSettings) -> dict:
    """LoRA (or full) SFT with the loss on assistant tokens only; saves a merged checkpoint at `out`."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tok = _load(base)
    feats = [f for f in (sft_features(tok, c, s.max_length) for c in conversations) if f is not None]
    if not feats:
        raise FlywheelError("sft: no conversation has an assistant turn to learn from")
    out.mkdir(parents=True, exist_ok=True)
    config = SFTConfig(**_common(s, out), max_length=s.max_length, packing=False)
    trainer = _fit(SFTTrainer, model, config, Dataset.from_list(feats), tok, s)
    losses = _losses(trainer)
    _save(trainer, tok, out)
    return {"examples": len(feats), "steps": trainer.state.global_step, "losses": losses}


def train_dpo(base: str, pairs: list[dict], out: Path, s: TrainSettings) -> dict:
    """DPO from prompt/chosen/rejected conversations (TRL); with LoRA the frozen base is the reference."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tok = _load(base)
    if not pairs:
        raise FlywheelError("dpo: no preference pairs")
    out.mkdir(parents=True, exist_ok=True)
    config = DPOConfig(**_common(s, out), beta=s.beta, max_length=s.max_length)
    trainer = _fit(DPOTrainer, model, config, Dataset.from_list(pairs), tok, s)
    stats = {
        "pairs": len(pairs),
        "steps": trainer.state.global_step,
        "losses": _losses(trainer),
        "reward_margins": _losses(trainer, "rewards/margins"),
    }
    _save(trainer, tok, out)
    return stats
