from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.errors import FlywheelError
from dataflywheel.models.base import CHAT
from dataflywheel.ops.base import Trainer
from dataflywheel.ops.train.sft import TrainParams, base_path
from dataflywheel.train.trainers import train_dpo


class DPOParams(TrainParams):
    beta: float = Field(
        0.1, gt=0, description="DPO temperature: how far the policy may move from the reference"
    )
    lr: float = Field(5e-5, gt=0, description="peak learning rate (linear decay)")


class DPO(Trainer):
    """Direct Preference Optimization (Rafailov et al., NeurIPS 2023) with TRL's DPOTrainer, from
    prompt / chosen / rejected rows (rows without a pair, e.g. ties ``self_reward`` left unpaired, are left
    out and counted). With LoRA, the frozen base model is the reference. The result is saved merged and
    named ``output_model`` for later steps. Rows pass through unchanged."""

    Params: ClassVar = DPOParams
    reads = (S.PROMPT, S.CHOSEN, S.REJECTED)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}

    def train(self, data: pa.Table, out_dir: Path) -> dict[str, Any]:
        pairs = [
            {"prompt": r[S.PROMPT], "chosen": r[S.CHOSEN], "rejected": r[S.REJECTED]}
            for r in data.select([S.PROMPT, S.CHOSEN, S.REJECTED]).to_pylist()
            if r[S.PROMPT] and r[S.CHOSEN] and r[S.REJECTED]
        ]
        if not pairs:
            raise FlywheelError(
                f"step {self.ctx.step} ({self.name}): none of the {data.num_rows} rows has a preference pair "
                "(prompt, chosen and rejected); see the step before for why (e.g. error_self_reward)"
            )
        stats = train_dpo(
            base_path(self),
            pairs,
            out_dir,
            self.params.settings(self.ctx.seed, beta=self.params.beta),
            self.progress,
        )
        return {**stats, "pairs": len(pairs), "rows_without_pair": data.num_rows - len(pairs)}
