from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.errors import FlywheelError
from dataflywheel.lib import gradients as G
from dataflywheel.models.base import LOGPROBS
from dataflywheel.ops.base import BudgetParams, ModelRef, Selection, Selector


class LessSelect(Selector):
    """LESS (Xia et al., ICML 2024): keep the rows whose gradients point where a target task's do.

    1. Warm-up: LoRA-train a private copy of the model on a random ``warmup_fraction`` of the pool for
       ``epochs`` epochs (AdamW, linear decay), keeping LoRA weights and Adam moments after each epoch.
    2. Per checkpoint: per-sample LoRA gradients of every pool row (torch.func vmap), turned into Adam
       update directions with that checkpoint's moments; plain gradients for every target row.
    3. A seeded Rademacher projection to ``projection_dim`` dimensions, then unit length (cosine).
    4. score = sum_i lr_i * cos(pool row, target row) with lr_i the epoch's mean learning rate
       (normalised to sum 1), averaged over the target rows of each sub-task, max over sub-tasks.
    5. Keep the top k or fraction (paper: 5%). Kept rows get ``score_less``.
    Defaults are the paper's (r=128, alpha=512, q/k/v/o, 4 epochs, lr 2e-5, d=8192); on a CPU use a
    small rank, two target modules, one or two epochs and d of 256-1024.
    """

    class Params(BudgetParams):
        model: str = ModelRef(description="an hf model to warm up and take gradients of")
        target: str = Field(description="file with the target task's examples (any supported format)")
        target_task: str | None = Field(None, description="column of the target file naming sub-tasks")
        warmup_fraction: float = Field(0.05, gt=0, le=1, description="share of the pool for warm-up")
        warmup_min: int = Field(8, ge=1, description="at least this many warm-up rows")
        epochs: int = Field(4, ge=1, description="warm-up epochs = checkpoints")
        lr: float = Field(2e-5, gt=0, description="warm-up peak learning rate")
        lora_r: int = Field(128, ge=1, description="LoRA rank")
        lora_alpha: int = Field(512, ge=1, description="LoRA alpha")
        lora_targets: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"], description="LoRA modules")
        projection_dim: int = Field(8192, ge=8, description="dimensions after random projection")
        max_length: int = Field(512, ge=16, description="tokens per example at most")
        batch_size: int = Field(8, ge=1, description="examples per gradient pass")
        seed: int | None = Field(None, description="seed of warm-up sampling, LoRA init and projection")

    reads = (S.MESSAGES,)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (LOGPROBS,)}

    def output_columns(self) -> list[str]:
        return ["score_less"]

    def _targets(self) -> tuple[list[list[dict]], list[str]]:
        p = self.params
        rows = io.read_all(self.ctx.path(p.target)).rows
        if p.target_task and rows and p.target_task not in rows[0]:
            raise FlywheelError(f"less: the target file has no column '{p.target_task}'")
        tasks = [str(r.get(p.target_task)) if p.target_task else "target" for r in rows]
        return [r[S.MESSAGES] for r in rows], tasks

    def _features(self, lg, examples, ck, seed: int, adam: tuple | None, chunk: int = 256) -> np.ndarray:
        """Projected unit gradient features, a chunk of examples at a time: full gradients (examples x
        LoRA parameters) exist for one chunk only."""
        p = self.params
        parts = []
        for s in range(0, len(examples), chunk):
            g = lg.per_sample_grads(examples[s : s + chunk], ck.lora, p.batch_size)
            if adam is not None:
                g = G.adam_direction(g, *adam)  # training rows: the Adam update they would cause
            parts.append(G.normalize(G.project(g, p.projection_dim, seed)))
        return np.concatenate(parts) if parts else np.zeros((0, p.projection_dim), dtype=np.float32)

    def select(self, table: pa.Table) -> Selection:
        p = self.params
        seed = p.seed if p.seed is not None else self.ctx.seed
        lg, pool, valid = G.lora_for_op(self, table, 0.1, seed)
        target_msgs, tasks = self._targets()
        targets = [lg.example(m) for m in target_msgs]
        keep_t = [i for i, e in enumerate(targets) if e is not None]
        if not keep_t:
            raise FlywheelError("less: no target example has an assistant response to take a gradient of")
        rng = np.random.default_rng(seed)
        n_warm = min(len(valid), max(p.warmup_min, int(len(valid) * p.warmup_fraction)))
        warm = [pool[i] for i in rng.choice(valid, size=n_warm, replace=False)]
        checkpoints = lg.warmup(warm, p.epochs, p.lr, p.batch_size)
        weights = np.array([c.lr for c in checkpoints])
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(weights), 1 / len(weights))
        task_names = sorted({tasks[i] for i in keep_t})
        task_rows = {t: [j for j, i in enumerate(keep_t) if tasks[i] == t] for t in task_names}
        score = np.zeros((len(valid), len(task_names)))
        for w, ck in zip(weights, checkpoints, strict=True):
            m, v = lg.flat(ck.exp_avg), lg.flat(ck.exp_avg_sq)
            target = self._features(lg, [targets[i] for i in keep_t], ck, seed, None)
            train = self._features(lg, [pool[i] for i in valid], ck, seed, (m, v))
            sims = train @ target.T
            for k, t in enumerate(task_names):
                score[:, k] += w * sims[:, task_rows[t]].mean(axis=1)
        best = score.max(axis=1)
        full = np.full(table.num_rows, np.nan)
        full[valid] = best
        ranked = np.asarray(valid, dtype=np.int64)[np.argsort(-best, kind="stable")]
        picked = np.sort(p.keep(ranked, self.token_costs(table) if p.tokens is not None else None))
        k = len(picked)
        return Selection(
            picked.astype(np.int64),
            reason=f"not among the top {k} LESS scores",
            columns={"score_less": pa.array(full)},
            stats={
                "lora_params": lg.n_params,
                "warmup_rows": n_warm,
                "checkpoint_lrs": weights.tolist(),
                "target_tasks": task_names,
                "projection_dim": p.projection_dim,
            },
        )
