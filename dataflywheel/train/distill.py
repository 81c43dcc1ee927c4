"""Logit distillation with one tokenizer: the teacher's top-k next-token log-probabilities, computed once
per row (``teacher_topk``) and stored beside the data, against the student's, on every response token.

Divergences (GKD, Agarwal et al., ICLR 2024, Eq. 1, with TRL's conventions): ``forward_kl`` =
KL(teacher || student), ``reverse_kl`` = KL(student || teacher), ``jsd`` = the generalized Jensen-Shannon
divergence JSD(beta) = beta KL(teacher || M) + (1 - beta) KL(student || M), M = beta teacher + (1 - beta)
student (beta 0 -> forward KL, 1 -> reverse KL). Both distributions are taken on the teacher's top-k
tokens, each renormalised there (with k = the vocabulary this is exactly the full divergence; a test
checks it against TRL's ``generalized_jsd_loss``). The training loss per token is (1 - kd_weight) * the
cross-entropy of the data's token + kd_weight * temperature^2 * the divergence at ``temperature``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataflywheel.errors import FlywheelError
from dataflywheel.hashing import digest
from dataflywheel.train.tokenize import sft_features
from dataflywheel.train.trainers import TrainSettings, _fit, _losses, _save, _throughput, labelled_logits

LOSSES = ("forward_kl", "reverse_kl", "jsd")


def labelled_positions(labels: list[int]) -> int:
    """How many next-token predictions a row trains (positions t whose label t + 1 is set)."""
    return sum(1 for t in labels[1:] if t != -100)


def token_digest(input_ids: list[int]) -> str:
    """What the teacher saw, so the student can check it tokenizes the row the same way."""
    return digest(",".join(map(str, input_ids)))[:16]


def topk_divergence(
    student_logits, teacher_ids, teacher_logprobs, loss: str, beta: float = 0.5, temperature: float = 1.0
):
    """Per-position divergence [N] between the student ([N, V] logits) and the teacher ([N, k] token ids
    and their log-probabilities), both on the teacher's k tokens, renormalised, at ``temperature``."""
    import torch

    s = torch.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, teacher_ids)
    s = s - torch.logsumexp(s, dim=-1, keepdim=True)
    t = teacher_logprobs.float() / temperature
    t = t - torch.logsumexp(t, dim=-1, keepdim=True)
    if loss == "forward_kl" or (loss == "jsd" and beta == 0):
        return (t.exp() * (t - s)).sum(-1)
    if loss == "reverse_kl" or (loss == "jsd" and beta == 1):
        return (s.exp() * (s - t)).sum(-1)
    if loss != "jsd":
        raise ValueError(f"unknown distillation loss {loss!r}; one of {LOSSES}")
    b = torch.tensor(beta, dtype=s.dtype, device=s.device)
    m = torch.logsumexp(torch.stack([s + torch.log1p(-b), t + torch.log(b)]), dim=0)
    return b * (t.exp() * (t - m)).sum(-1) + (1 - b) * (s.exp() * (s - m)).sum(-1)


class TeacherCollator:
    """Takes the teacher's columns out of each example, lets the SFT collator pad the rest, and adds the
    teacher's ids and log-probabilities as [N, k] tensors in the order the student's labelled positions
    come in (row by row, left to right)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):
        import torch

        ids, lps = [], []
        rest = []
        for ex in examples:
            ex = dict(ex)
            ids.extend(ex.pop("teacher_ids"))
            lps.extend(ex.pop("teacher_logprobs"))
            rest.append(ex)
        batch = self.collator(rest)
        batch["teacher_ids"] = torch.tensor(ids, dtype=torch.long)
        batch["teacher_logprobs"] = torch.tensor(lps, dtype=torch.float32)
        return batch


def distill_loss(model, inputs: dict, count, loss: str, beta: float, kd_weight: float, temperature: float):
    """(1 - kd_weight) * cross-entropy + kd_weight * T^2 * divergence, summed over the labelled positions
    and divided by ``count`` (the batch's labelled tokens, or the bucketed average)."""
    import torch
    import torch.nn.functional as F

    teacher_ids = inputs.pop("teacher_ids")
    teacher_lps = inputs.pop("teacher_logprobs")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kwargs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
    logits, target, mask = labelled_logits(base, inputs["labels"], **kwargs)
    if logits.shape[0] != teacher_ids.shape[0]:
        raise FlywheelError(
            f"distill: the batch trains {logits.shape[0]} positions but the teacher's log-probs cover "
            f"{teacher_ids.shape[0]}"
        )
    ce = F.cross_entropy(logits.float(), target, reduction="sum")
    kd = topk_divergence(
        logits, teacher_ids.to(logits.device), teacher_lps.to(logits.device), loss, beta, temperature
    ).sum()
    total = (1 - kd_weight) * ce + kd_weight * temperature**2 * kd
    count = count if count is not None else mask.sum()
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


def distill_features(tok, rows: list[dict], max_length: int) -> tuple[list[dict], dict[str, int]]:
    """The student's SFT features of each row with the teacher's top-k beside them. A row the student
    tokenizes differently from the teacher (another tokenizer, template or max_length) is an error: a
    same-tokenizer loss cannot pair its positions."""
    feats, counts = [], {"rows_without_response": 0}
    for i, row in enumerate(rows):
        f = sft_features(tok, row["messages"], max_length)
        if f is None:
            counts["rows_without_response"] += 1
            continue
        ids, lps = row.get("teacher_topk_ids"), row.get("teacher_topk_logprobs")
        if ids is None or lps is None:
            raise FlywheelError(f"distill: row {i} ({row.get('id')}) has no teacher log-probs (teacher_topk)")
        n = labelled_positions(f["labels"])
        if row.get("teacher_tokens") != token_digest(f["input_ids"]) or len(ids) != n:
            raise FlywheelError(
                f"distill: row {i} ({row.get('id')}) tokenizes differently for the student than it did for "
                f"the teacher ({n} response positions against the teacher's {len(ids)}): same-tokenizer "
                "distillation needs the teacher's tokenizer, chat template and max_length"
            )
        feats.append({**f, "teacher_ids": ids, "teacher_logprobs": lps})
    return feats, counts


def train_distill(
    base: str,
    rows: list[dict],
    out: Path,
    s: TrainSettings,
    loss: str = "jsd",
    beta: float = 0.5,
    kd_weight: float = 0.5,
    temperature: float = 1.0,
    progress=None,
) -> dict[str, Any]:
    """The student (``base``, LoRA or full) trained on the rows' responses against the teacher's stored
    top-k log-probabilities; saves a merged checkpoint at ``out``."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from dataflywheel.train.trainers import _common, _load

    if loss not in LOSSES:
        raise FlywheelError(f"distill: unknown loss {loss!r}; one of {', '.join(LOSSES)}")
    model, tok = _load(base)
    feats, counts = distill_features(tok, rows, s.max_length)
    if not feats:
        raise FlywheelError("distill: no row has a response to learn from")
    out.mkdir(parents=True, exist_ok=True)
    config = SFTConfig(**_common(s, out), max_length=s.max_length, packing=False, remove_unused_columns=False)

    def setup(trainer):
        trainer.data_collator = TeacherCollator(trainer.data_collator)

        def compute(model, inputs, count):
            return distill_loss(model, inputs, count, loss, beta, kd_weight, temperature)

        trainer.custom_loss = compute

    trainer, meter = _fit(SFTTrainer, model, config, Dataset.from_list(feats), tok, s, progress, setup=setup)
    return {
        "examples": len(feats),
        "steps": trainer.state.global_step,
        "losses": _losses(trainer),
        "loss": loss,
        "beta": beta,
        "kd_weight": kd_weight,
        "temperature": temperature,
        **counts,
        **_throughput(meter, s),
        "save_seconds": _save(trainer, tok, out),
    }
