from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import CHAT
from dataflywheel.ops.base import ModelRef, OpParams, Trainer
from dataflywheel.ops.train.sft import base_path
from dataflywheel.train.prune import prune_model


class PruneParams(OpParams):
    model: str = ModelRef(description="the model to prune (declared hf, or trained earlier)")
    output_model: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the pruned model's name")
    target: float = Field(0.7, gt=0, le=1, description="parameters kept, embeddings included")
    importance: Literal["taylor", "magnitude"] = Field(
        "taylor", description="first-order Taylor |w * grad| on the calibration rows, or squared weights"
    )
    calibration: int = Field(32, ge=1, description="rows for the gradient (the first with a response)")
    max_length: int = Field(512, ge=16, description="tokens per calibration row at most")
    batch_size: int = Field(4, ge=1, description="calibration rows per forward pass")


class Prune(Trainer):
    """Structured pruning with recovery in mind (LLM-Pruner): whole GQA attention groups and MLP channels
    of every layer ranked by first-order Taylor importance on calibration rows (or by magnitude) and
    removed, to ``target`` of the parameters; the smaller model is saved as a plain transformers
    checkpoint named ``output_model`` (servable, and tunable by a following ``sft``: the recovery step).
    Rows pass through."""

    Params: ClassVar = PruneParams
    reads = (S.MESSAGES,)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}

    def train(self, data: pa.Table, out_dir: Path) -> dict[str, Any]:
        p = self.params
        convs = [c for c in data.column(S.MESSAGES).to_pylist() if c and S.last_turn(c, "assistant")]
        return prune_model(
            base_path(self),
            convs[: p.calibration],
            out_dir,
            target=p.target,
            importance=p.importance,
            max_length=p.max_length,
            batch_size=p.batch_size,
        )
