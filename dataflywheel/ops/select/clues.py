from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.errors import FlywheelError
from dataflywheel.lib import gradients as G
from dataflywheel.models.base import LOGPROBS
from dataflywheel.ops.base import ModelRef, OpParams, Selection, Selector


class CluesSelect(Selector):
    """CLUES (Zhao et al., NeurIPS 2024): keep the samples whose training dynamics agree with a small
    trusted anchor set; meant for collaborative fine-tuning, where each client scores its private data
    and one global threshold applies to all (clients = the ``origin`` of the rows).

    A private LoRA copy is fine-tuned on the raw pool (``warmup_fraction`` of it), keeping a checkpoint
    per epoch. score(z) = (1/C) sum_c lr_c <g_c(z), mean anchor gradient_c> (a TracIn-style accumulated
    inner product; ``adam`` preconditions the sample gradients as LESS does, ``projection_dim`` projects
    first). The anchors are scored the same way and set the global threshold: ``rule: anchor_percentile``
    keeps samples scoring at least the given percentile of the anchors' scores (the statistic CLUES uses
    is not confirmed; the percentile is a parameter), ``rule: ratio`` keeps the top ``ratio`` (the
    reference code's select_ratio, 0.6). Kept rows get ``score_clues``.
    """

    class Params(OpParams):
        model: str = ModelRef(description="an hf model to fine-tune and take gradients of")
        anchor: str = Field(description="file with trusted anchor examples (any supported format)")
        rule: Literal["anchor_percentile", "ratio"] = Field(
            "anchor_percentile", description="global threshold"
        )
        percentile: float = Field(10.0, ge=0, le=100, description="anchor score percentile used as threshold")
        ratio: float = Field(0.6, gt=0, le=1, description="share of samples kept with rule: ratio")
        warmup_fraction: float = Field(1.0, gt=0, le=1, description="share of the pool to fine-tune on")
        epochs: int = Field(4, ge=1, description="fine-tuning epochs = checkpoints")
        lr: float = Field(2e-5, gt=0, description="peak learning rate")
        lora_r: int = Field(8, ge=1, description="LoRA rank")
        lora_alpha: int = Field(16, ge=1, description="LoRA alpha")
        lora_targets: list[str] = Field(["q_proj", "v_proj"], description="LoRA modules")
        adam: bool = Field(False, description="Adam-precondition the sample gradients (noproj_adam)")
        projection_dim: int | None = Field(None, ge=8, description="project gradients first (default: no)")
        max_length: int = Field(512, ge=16, description="tokens per example at most")
        batch_size: int = Field(8, ge=1, description="examples per gradient pass")
        seed: int | None = Field(None, description="seed; the recipe's seed when unset")

    reads = (S.MESSAGES,)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (LOGPROBS,)}

    def output_columns(self) -> list[str]:
        return ["score_clues"]

    def _grads(self, lg, examples, ck, seed, adam: bool) -> np.ndarray:
        p = self.params
        g = lg.per_sample_grads(examples, ck.lora, p.batch_size)
        if adam:
            g = G.adam_direction(g, lg.flat(ck.exp_avg), lg.flat(ck.exp_avg_sq))
        return G.project(g, p.projection_dim, seed) if p.projection_dim else g

    def select(self, table: pa.Table) -> Selection:
        p = self.params
        seed = p.seed if p.seed is not None else self.ctx.seed
        lg, pool, valid = G.lora_for_op(self, table, 0.0, seed)
        anchors = [
            e for e in (lg.example(r[S.MESSAGES]) for r in io.read_all(self.ctx.path(p.anchor)).rows) if e
        ]
        if not anchors:
            raise FlywheelError("clues: no anchor example has an assistant response")
        rng = np.random.default_rng(seed)
        n_warm = max(1, int(len(valid) * p.warmup_fraction))
        warm = [pool[i] for i in rng.choice(valid, size=n_warm, replace=False)]
        checkpoints = lg.warmup(warm, p.epochs, p.lr, p.batch_size)
        sample_score = np.zeros(len(valid))
        anchor_score = np.zeros(len(anchors))
        for ck in checkpoints:
            # The target direction is the anchors' plain mean gradient; samples and anchors are then
            # scored the same way (both Adam directions with `adam`), so the anchors' threshold and the
            # samples' scores live on one scale.
            g_anchor = self._grads(lg, anchors, ck, seed, False)
            mean_anchor = g_anchor.mean(axis=0)
            sample_score += ck.lr * (
                self._grads(lg, [pool[i] for i in valid], ck, seed, p.adam) @ mean_anchor
            )
            scored_anchor = self._grads(lg, anchors, ck, seed, True) if p.adam else g_anchor
            anchor_score += ck.lr * (scored_anchor @ mean_anchor)
        sample_score /= len(checkpoints)
        anchor_score /= len(checkpoints)
        if p.rule == "ratio":
            k = round(len(valid) * p.ratio)
            threshold = float(np.sort(sample_score)[::-1][k - 1]) if k else float("inf")
        else:
            threshold = float(np.percentile(anchor_score, p.percentile))
        keep = np.asarray(valid)[sample_score >= threshold]
        full = np.full(table.num_rows, np.nan)
        full[valid] = sample_score
        return Selection(
            np.sort(keep).astype(np.int64),
            reason="CLUES score below the global threshold",
            columns={"score_clues": pa.array(full)},
            stats={
                "threshold": threshold,
                "anchor_scores": [round(float(x), 8) for x in anchor_score],
                "checkpoint_lrs": [c.lr for c in checkpoints],
                "lora_params": lg.n_params,
            },
        )
