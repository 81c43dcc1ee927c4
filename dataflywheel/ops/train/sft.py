from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import CHAT
from dataflywheel.ops.base import ModelRef, OpParams, Trainer
from dataflywheel.train.trainers import TrainSettings, train_sft


class TrainParams(OpParams):
    model: str = ModelRef(description="the base model (an hf model of the recipe, or one trained earlier)")
    output_model: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="name later steps use for the result")
    lora: bool = Field(
        True, description="LoRA adapters (merged into the saved checkpoint); false = full tuning"
    )
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha")
    lora_dropout: float = Field(
        0.0, ge=0, lt=1, description="LoRA dropout (PEFT's default 0; on CPU its masks cost 20-40% of a step)"
    )
    lora_targets: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"], description="LoRA modules")
    epochs: float = Field(1.0, gt=0, description="passes over the data")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    lr: float = Field(2e-4, gt=0, description="peak learning rate (linear decay)")
    batch_size: int = Field(4, ge=1, description="rows per device step")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    max_length: int = Field(512, ge=16, description="tokens per row at most")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of steps warming up the learning rate")
    seed: int | None = Field(None, description="seed; the recipe's seed when unset")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="bfloat16 = mixed precision (fp32 weights, bf16 matmuls); auto = bfloat16 where the "
        "hardware multiplies it natively (a CUDA GPU with bf16, a CPU with AMX), else float32",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, about 20-30% slower"
    )
    group_by_length: bool = Field(
        True, description="batch rows of similar length together (less padding; order still shuffled)"
    )

    def settings(self, seed: int, **extra: Any) -> TrainSettings:
        return TrainSettings(
            lora=self.lora,
            lora_r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            lora_targets=tuple(self.lora_targets),
            epochs=self.epochs,
            max_steps=self.max_steps,
            lr=self.lr,
            batch_size=self.batch_size,
            grad_accum=self.grad_accum,
            max_length=self.max_length,
            warmup_ratio=self.warmup_ratio,
            seed=self.seed if self.seed is not None else seed,
            precision=self.precision,
            gradient_checkpointing=self.gradient_checkpointing,
            group_by_length=self.group_by_length,
            **extra,
        )


def base_path(op: Trainer) -> str:
    """The folder of the model a trainer starts from (trainers load it themselves)."""
    return model_folder(op, op.params.model)[0]


def model_folder(op, name: str) -> tuple[str, str]:
    """The folder a declared (or trained) model lives in and its device, without loading it (a token
    classifier or an encoder is not a chat model; a trainer loads what it needs itself)."""
    from dataflywheel.models import embedded
    from dataflywheel.models.hf import pick_device

    spec = op.ctx.model(name).spec
    path = embedded.resolve(spec.model) if spec.model.startswith("embedded:") else spec.model
    return str(path), pick_device(spec.device)


class SFT(Trainer):
    """Supervised fine-tuning with TRL's SFTTrainer, LoRA (PEFT) or full, loss on assistant tokens only.

    Every assistant turn of a multi-turn conversation is learned, each with everything before it as
    context, under the model's own chat template (no special template needed). The trained model is
    saved merged, as a plain transformers checkpoint in the step's folder, and is available to later
    steps as ``output_model`` (and to ``flywheel serve``). Rows pass through unchanged.
    """

    Params: ClassVar = TrainParams
    reads = (S.MESSAGES,)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}

    def train(self, data: pa.Table, out_dir: Path) -> dict[str, Any]:
        convs = data.column(S.MESSAGES).to_pylist()
        return train_sft(base_path(self), convs, out_dir, self.params.settings(self.ctx.seed), self.progress)
