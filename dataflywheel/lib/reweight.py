"""Learning to reweight examples (Ren, Zeng, Yang and Urtasun, ICML 2018), as LLMaAA trains on LLM labels.

For a batch of (possibly noisy) examples: give each a weight eps_i = 0, take one virtual SGD step on
sum_i eps_i L_i(theta), measure the loss on clean gold examples at the stepped parameters, and weight
example i by max(-d L_gold / d eps_i, 0), normalised to sum to 1 (all zero when none helps). An example
whose gradient points away from the gold examples' gradient (a wrong label) gets weight 0. The virtual
step is differentiated with ``torch.func.functional_call`` (no ``higher`` dependency).

``LinearHead`` is the task model LLMaAA's loop trains here: a softmax classifier over fixed text
embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def example_weights(model, x, y, gold_x, gold_y, lr: float):
    """Each example's weight (a tensor summing to 1, or all zeros) for the batch (x, y) against the gold
    batch, at the model's current parameters."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    params = {k: v for k, v in model.named_parameters() if v.requires_grad}
    eps = torch.zeros(len(y), requires_grad=True)
    losses = F.cross_entropy(functional_call(model, params, (x,)), y, reduction="none")
    grads = torch.autograd.grad((eps * losses).sum(), list(params.values()), create_graph=True)
    stepped = {k: p - lr * g for (k, p), g in zip(params.items(), grads, strict=True)}
    gold_loss = F.cross_entropy(functional_call(model, stepped, (gold_x,)), gold_y)
    (d_eps,) = torch.autograd.grad(gold_loss, eps)
    w = torch.clamp(-d_eps, min=0).detach()
    total = w.sum()
    return w / total if total > 0 else w


@dataclass
class TrainStats:
    epochs: int
    steps: int
    zero_weight_batches: int  # batches where no example helped the gold loss (no update)


class LinearHead:
    """A softmax classifier over embeddings, trained with SGD, optionally reweighted against gold rows."""

    def __init__(self, dim: int, n_labels: int, seed: int = 0):
        import torch

        torch.manual_seed(seed)
        self.model = torch.nn.Linear(dim, n_labels)
        self.seed = seed

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        gold_x: np.ndarray | None = None,
        gold_y: np.ndarray | None = None,
        epochs: int = 40,
        batch_size: int = 16,
        lr: float = 0.5,
    ) -> TrainStats:
        """Plain SGD on (x, y) when no gold is given; with gold, every batch is reweighted first."""
        import torch
        import torch.nn.functional as F

        xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
        reweight = gold_x is not None and gold_y is not None and len(gold_y) > 0
        if reweight:
            gx = torch.as_tensor(gold_x, dtype=torch.float32)
            gy = torch.as_tensor(gold_y, dtype=torch.long)
        opt = torch.optim.SGD(self.model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(self.seed)
        steps = skipped = 0
        # each example's weight in the last epoch, scaled by its batch's size (uniform = 1)
        self.last_weights = np.ones(len(yt))
        for epoch in range(epochs):
            for idx in torch.randperm(len(yt), generator=gen).split(batch_size):
                xb, yb = xt[idx], yt[idx]
                if reweight:
                    w = example_weights(self.model, xb, yb, gx, gy, lr)
                    if epoch == epochs - 1:
                        self.last_weights[idx.numpy()] = (w * len(idx)).numpy()
                    if w.sum() == 0:
                        skipped += 1
                        continue
                else:
                    w = torch.full((len(idx),), 1.0 / len(idx))
                loss = (w * F.cross_entropy(self.model(xb), yb, reduction="none")).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps += 1
        return TrainStats(epochs, steps, skipped)

    def proba(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.softmax(self.model(torch.as_tensor(x, dtype=torch.float32)), -1).numpy()
