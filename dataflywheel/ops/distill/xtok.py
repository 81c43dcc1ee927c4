from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import CHAT
from dataflywheel.ops.base import ModelRef, OpParams, Trainer
from dataflywheel.ops.train.sft import model_folder
from dataflywheel.train.xtok import train_xtok


class XtokParams(OpParams):
    model: str = ModelRef(description="the student: an hf model (any tokenizer with a chat template)")
    teacher: str = ModelRef(description="the teacher: an hf model, run frozen beside the student")
    output_model: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the distilled student's name")
    loss: Literal["uld", "mined", "dskd", "ce"] = Field(
        "uld", description="ULD, MinED, DSKD with cross-model attention, or cross-entropy alone (baseline)"
    )
    kd_weight: float = Field(0.5, ge=0, le=1, description="the KD term's share; the rest is cross-entropy")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the KD term (DSKD: 2.0)")
    epochs: float = Field(1.0, gt=0, description="passes over the rows")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    batch_size: int = Field(4, ge=1, description="rows per step")
    lr: float = Field(5e-4, gt=0, description="the student's learning rate (full fine-tuning)")
    projector_lr: float = Field(1e-3, gt=0, description="DSKD: the projectors' learning rate")
    max_length: int = Field(512, ge=16, description="tokens per row at most, on each side")


class XtokDistill(Trainer):
    """Logit distillation across tokenizers: the student (full fine-tuning) learns each row's answers
    from the data's tokens and from the frozen teacher, which reads the same conversation with its own
    tokenizer: ULD (sorted-probability L1, no vocabulary mapping), MinED (teacher logits carried into the
    student's vocabulary through edit-distance token and sequence alignment) or DSKD with cross-model
    attention (projectors saved beside the student as ``projector.pt``). ``loss: ce`` trains the same
    steps without the teacher: the baseline. The student is saved as ``output_model``."""

    Params: ClassVar = XtokParams
    reads = (S.MESSAGES,)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,), "teacher": (CHAT,)}

    def train(self, data: pa.Table, out_dir: Path) -> dict[str, Any]:
        p = self.params
        student, _ = model_folder(self, p.model)
        teacher, _ = model_folder(self, p.teacher)
        return train_xtok(
            student, teacher, data.column(S.MESSAGES).to_pylist(), out_dir, loss=p.loss,
            kd_weight=p.kd_weight, temperature=p.temperature, epochs=p.epochs, max_steps=p.max_steps,
            batch_size=p.batch_size, lr=p.lr, projector_lr=p.projector_lr, max_length=p.max_length,
            seed=self.ctx.seed, progress=self.progress,
        )  # fmt: skip
