from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import CHAT
from dataflywheel.ops.base import Trainer
from dataflywheel.ops.distill.teacher_topk import IDS, LOGPROBS_COL, TOKENS
from dataflywheel.ops.train.sft import TrainParams, base_path
from dataflywheel.train.distill import train_distill


class DistillParams(TrainParams):
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "jsd", description="KL(teacher||student), KL(student||teacher), or GKD's generalized JSD"
    )
    beta: float = Field(0.5, ge=0, le=1, description="jsd: 0 = forward KL, 1 = reverse KL (GKD's beta)")
    kd_weight: float = Field(
        0.5, ge=0, le=1, description="the divergence's share of the loss; the rest is cross-entropy"
    )
    temperature: float = Field(1.0, gt=0, description="softmax temperature of both distributions")


class Distill(Trainer):
    """Logit distillation with one tokenizer (GKD's supervised divergences): the student learns each row's
    response from the data's tokens and from the teacher's stored top-k distribution (``teacher_topk``
    before it), with forward KL, reverse KL or the generalized JSD, renormalised on the teacher's k tokens.
    Rows the student tokenizes differently from the teacher stop the step with the row named (use a
    cross-tokenizer loss there). LoRA or full; the result is saved merged as ``output_model``."""

    Params: ClassVar = DistillParams
    reads = (S.MESSAGES, IDS, LOGPROBS_COL, TOKENS)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}

    def train(self, data: pa.Table, out_dir: Path) -> dict[str, Any]:
        p = self.params
        rows = data.select([S.ID, S.MESSAGES, IDS, LOGPROBS_COL, TOKENS]).to_pylist()
        return train_distill(
            base_path(self),
            rows,
            out_dir,
            p.settings(self.ctx.seed),
            loss=p.loss,
            beta=p.beta,
            kd_weight=p.kd_weight,
            temperature=p.temperature,
            progress=self.progress,
        )
