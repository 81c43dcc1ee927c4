"""Per-sample LoRA gradients, Adam preconditioning and random projection: the machinery of LESS and
CLUES (gradient-based data selection).

Per-sample gradients come from one vectorised pass (``torch.func.vmap`` over ``grad`` of a functional
call), not one backward pass per sample. Projections use a Rademacher matrix (+-1/sqrt(d)) generated
chunk by chunk from a fixed seed, so the full (parameters x d) matrix never exists in memory.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from dataflywheel.data import schema as S
from dataflywheel.lib.diversity import normalize  # noqa: F401  (LESS and CLUES call it from here)
from dataflywheel.train.tokenize import sft_features
from dataflywheel.train.trainers import lora_config


@dataclass
class Checkpoint:
    """LoRA weights and Adam moments after one warm-up epoch, and that epoch's mean learning rate."""

    lora: dict
    exp_avg: dict
    exp_avg_sq: dict
    lr: float


@dataclass
class Example:
    ids: list[int]
    labels: list[int]  # -100 where no loss is taken (prompt, padding)


@dataclass
class LoraGradients:
    """A private LoRA copy of an hf backend's model, for warm-up training and gradient features."""

    backend: object
    r: int = 128
    alpha: int = 512
    dropout: float = 0.1
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    max_length: int = 512
    seed: int = 0
    checkpoints: list[Checkpoint] = field(default_factory=list)

    def __post_init__(self):
        import torch
        from peft import get_peft_model

        torch.manual_seed(self.seed)
        base = copy.deepcopy(self.backend.model).float()  # the backend's own model stays untouched
        config = lora_config(self.r, self.alpha, self.dropout, self.targets)
        self.model = get_peft_model(base, config)
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.torch = torch

    @property
    def n_params(self) -> int:
        return sum(p.numel() for n, p in self.model.named_parameters() if p.requires_grad)

    # ------------------------------------------------------------------ data
    def example(self, messages: list[dict]) -> Example | None:
        """Loss on every assistant turn (its text and end-of-turn marker), given everything before it:
        the same tokens SFT trains on (train.tokenize), so the gradients are those of the training loss."""
        if not messages or not any(m["role"] == "assistant" for m in messages):
            return None
        features = sft_features(self.backend.tokenizer, messages, self.max_length)
        if features is None or all(t == -100 for t in features["labels"][1:]):
            return None
        return Example(features["input_ids"], features["labels"])

    def _batch(self, examples: list[Example]):
        torch = self.torch
        width = max(len(e.ids) for e in examples)
        pad = self.backend.tokenizer.pad_token_id
        ids = torch.full((len(examples), width), pad, dtype=torch.long)
        labels = torch.full((len(examples), width), -100, dtype=torch.long)
        for i, e in enumerate(examples):  # right padding: causal attention keeps pads out of real tokens
            ids[i, : len(e.ids)] = torch.tensor(e.ids)
            labels[i, : len(e.labels)] = torch.tensor(e.labels)
        return ids, labels

    # ------------------------------------------------------------------ warm-up
    def warmup(
        self, examples: list[Example], epochs: int, lr: float, batch_size: int = 8, warmup_ratio: float = 0.03
    ) -> list[Checkpoint]:
        """LoRA training with AdamW and linear decay; a checkpoint (weights + Adam state) per epoch."""
        torch = self.torch
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        steps = epochs * math.ceil(len(examples) / batch_size)
        warm = max(1, int(steps * warmup_ratio))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm)))
        )
        rng = np.random.default_rng(self.seed)
        self.model.train()
        self.checkpoints = []
        for _ in range(epochs):
            lrs = []
            order = rng.permutation(len(examples))
            for start in range(0, len(examples), batch_size):
                batch = [examples[i] for i in order[start : start + batch_size]]
                ids, labels = self._batch(batch)
                loss = self.model(input_ids=ids, labels=labels).loss
                loss.backward()
                lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step()
                opt.zero_grad()
            state = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
            self.checkpoints.append(
                Checkpoint(
                    lora={n: p.detach().clone() for n, p in state.items()},
                    exp_avg={n: opt.state[p]["exp_avg"].clone() for n, p in state.items()},
                    exp_avg_sq={n: opt.state[p]["exp_avg_sq"].clone() for n, p in state.items()},
                    lr=float(np.mean(lrs)),
                )
            )
        self.model.eval()
        return self.checkpoints

    # ------------------------------------------------------------------ gradients
    def per_sample_grads(
        self, examples: list[Example], lora: dict, batch_size: int = 8, method: str = "hooks"
    ) -> np.ndarray:
        """(examples, LoRA parameters) gradients of each example's mean token loss.

        ``hooks`` (default): one batched forward and backward; every LoRA matrix is a linear layer, so
        its per-sample gradient is sum_t grad_out[b, t] x input[b, t], taken from hooks. ``vmap``:
        torch.func's grad vectorised over the batch. Both equal one backward pass per sample; on the
        CPU hooks are the fastest and vmap the slowest (bench/less_grads.py).
        """
        if method == "hooks":
            return self._grads_hooks(examples, lora, batch_size)
        if method != "vmap":
            raise ValueError(f"method must be hooks or vmap, got {method!r}")
        return self._grads_vmap(examples, lora, batch_size)

    def _load(self, lora: dict) -> None:
        with self.torch.no_grad():
            for n, p in self.model.named_parameters():
                if n in lora:
                    p.copy_(lora[n])

    def _grads_hooks(self, examples: list[Example], lora: dict, batch_size: int) -> np.ndarray:
        torch = self.torch
        self._load(lora)
        self.model.eval()
        modules = [self.model.get_submodule(n.removesuffix(".weight")) for n in self.names]
        inputs: dict[int, torch.Tensor] = {}
        grads_out: dict[int, torch.Tensor] = {}
        handles = []
        for k, mod in enumerate(modules):
            handles.append(
                mod.register_forward_hook(lambda m, i, o, k=k: inputs.__setitem__(k, i[0].detach()))
            )
            handles.append(
                mod.register_full_backward_hook(
                    lambda m, gi, go, k=k: grads_out.__setitem__(k, go[0].detach())
                )
            )
        out = np.zeros((len(examples), self.n_params), dtype=np.float32)
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
        try:
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                ids, labels = self._batch([examples[i] for i in idx])
                # The LM head only where a label is predicted: the prompt's logits are never needed.
                base = self.model.get_base_model()
                hidden = base.get_decoder()(input_ids=ids).last_hidden_state[:, :-1]
                target = labels[:, 1:]
                rows, cols = torch.nonzero(target != -100, as_tuple=True)
                logits = base.get_output_embeddings()(hidden[rows, cols]).float()
                tok = torch.nn.functional.cross_entropy(logits, target[rows, cols], reduction="none")
                counts = (target != -100).sum(1).clamp(min=1)
                per_sample = torch.zeros(len(idx)).index_add(0, rows, tok) / counts
                self.model.zero_grad()
                per_sample.sum().backward()  # samples never mix, so each grad_out row is its own sample's
                cols = [
                    torch.einsum("bto,bti->boi", grads_out[k], inputs[k]).reshape(len(idx), -1)
                    for k in range(len(modules))
                ]
                out[idx] = torch.cat(cols, dim=1).numpy()
        finally:
            for h in handles:
                h.remove()
        return out

    def _grads_vmap(self, examples: list[Example], lora: dict, batch_size: int = 8) -> np.ndarray:
        torch = self.torch
        from torch.func import functional_call, grad, vmap

        model = self.model
        model.eval()  # no dropout: a gradient feature must not depend on chance

        def loss(p, x, y):
            return functional_call(model, p, (x.unsqueeze(0),), {"labels": y.unsqueeze(0)}).loss

        per_example = vmap(grad(loss), in_dims=(None, 0, 0))
        params = {n: lora[n].detach() for n in self.names}
        out = np.zeros((len(examples), self.n_params), dtype=np.float32)
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))  # similar lengths together
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            ids, labels = self._batch([examples[i] for i in idx])
            g = per_example(params, ids, labels)
            out[idx] = torch.cat([g[n].reshape(len(idx), -1) for n in self.names], dim=1).numpy()
        return out

    def per_sample_grads_loop(self, examples: list[Example], lora: dict) -> np.ndarray:
        """The reference: one backward pass per sample (what vmap replaces)."""
        torch = self.torch
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                if n in lora:
                    p.copy_(lora[n])
        self.model.eval()
        out = np.zeros((len(examples), self.n_params), dtype=np.float32)
        named = dict(self.model.named_parameters())
        for i, e in enumerate(examples):
            ids, labels = self._batch([e])
            self.model.zero_grad()
            self.model(input_ids=ids, labels=labels).loss.backward()
            out[i] = torch.cat([named[n].grad.reshape(-1) for n in self.names]).numpy()
        return out

    def flat(self, state: dict) -> np.ndarray:
        return self.torch.cat([state[n].reshape(-1) for n in self.names]).numpy()


def lora_for_op(op, table, dropout: float, seed: int) -> tuple[LoraGradients, list, list[int]]:
    """The LoRA copy of an op's hf model, the table's rows as examples, and the positions usable."""
    from dataflywheel.errors import FlywheelError

    p = op.params
    model = op.ctx.model(p.model)
    if not hasattr(model.backend, "split_ids"):
        raise FlywheelError(
            f"{op.name}: model '{p.model}' must use the hf backend (gradients need the weights)"
        )
    lg = LoraGradients(
        model.backend, p.lora_r, p.lora_alpha, dropout, tuple(p.lora_targets), p.max_length, seed
    )
    pool = [lg.example(m) for m in table.column(S.MESSAGES).to_pylist()]
    return lg, pool, [i for i, e in enumerate(pool) if e is not None]


def adam_direction(
    g: np.ndarray, m: np.ndarray, v: np.ndarray, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
) -> np.ndarray:
    """LESS's Adam update direction from a checkpoint's moments: m'/sqrt(v' + eps) (eps inside the root)."""
    m2 = beta1 * m + (1 - beta1) * g
    v2 = beta2 * v + (1 - beta2) * g * g
    return m2 / np.sqrt(v2 + eps)


PROJECTION_BLOCK = 1024  # feature rows per generated block of R; R depends on the seed alone


def project(x: np.ndarray, dim: int, seed: int = 0, blocks_per_step: int = 4) -> np.ndarray:
    """x @ R with R a (features x dim) Rademacher matrix of +-1/sqrt(dim). R is generated in blocks of
    1,024 feature rows, each from (seed, block index), so the same seed gives the same R whatever the
    step size, and memory holds only a few blocks of R at a time."""
    out = np.zeros((x.shape[0], dim), dtype=np.float32)
    step = PROJECTION_BLOCK * blocks_per_step
    for s in range(0, x.shape[1], step):
        stop = min(s + step, x.shape[1])
        parts = []
        for b in range(s // PROJECTION_BLOCK, -(-stop // PROJECTION_BLOCK)):
            rows = min(PROJECTION_BLOCK, x.shape[1] - b * PROJECTION_BLOCK)
            signs = np.random.default_rng([seed, b]).integers(0, 2, size=(rows, dim), dtype=np.int8)
            parts.append(signs.astype(np.float32) * 2 - 1)
        out += x[:, s:stop] @ np.concatenate(parts)
    return out / np.sqrt(dim)
