"""Logit distillation across tokenizers (METHODS.md 4.2): ULD, MinED and DSKD with cross-model attention.

The teacher and the student read the same conversation, each with its own tokenizer and chat template;
the teacher runs frozen beside the student. The DSKD repository's criterions are the
reference for all three losses.

* **ULD** (Boizard et al.): the answer positions of both sides aligned from the start of the answer and
  cut to the shorter; at each, the L1 distance between the sorted probability vectors (the shorter
  vocabulary zero-padded): a Wasserstein bound that needs no vocabulary mapping.
* **MinED** (FuseLLM's alignment as the DSKD repo uses it): teacher tokens mapped to student tokens by
  exact match, else by minimum edit distance (``vocab_map``); the two token sequences aligned by dynamic
  time warping with edit-distance costs (``dtw``); at one-to-one positions whose tokens map to each other,
  the teacher's logits carried into the student's vocabulary (the max over the teacher tokens mapped to
  each student token), elsewhere the one-hot of the target; forward KL.
* **DSKD-CMA** (Zhang et al.): projectors move each side's hidden states into the other's space, a
  cross-model attention from the student's (input, target) embeddings to the teacher's aligns the
  positions, and each distribution is produced by the other model's (frozen) head: the student learns
  from the teacher's projected distribution (KL, counted where it predicts the target) and the
  projectors learn to predict the targets through both heads.

All three mix with the cross-entropy as ``(1 - kd_weight) * CE + kd_weight * KD``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dataflywheel.train.tokenize import pad_features, sft_features

LOSSES = ("ce", "uld", "mined", "dskd")
STUDENT_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} [SEP] {% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


# ------------------------------------------------------------------ features


def row_features(tok, conv: list[dict], max_length: int) -> dict | None:
    """input_ids and labels (-100 outside the answers) under ``tok``'s chat template (``sft`` tokenizes
    the same way); None without an answer."""
    if not getattr(tok, "chat_template", None):
        raise ValueError(
            f"{tok.name_or_path}: no chat template; give the tokenizer one (build_wordpiece_student does)"
        )
    return sft_features(tok, conv, max_length)


def canonical_tokens(tok, ids: Sequence[int] | None = None, normalize=None) -> list[str]:
    """Token strings in one spelling across tokenizers: "▁" starts a word (GPT-2's "Ġ", SentencePiece's
    "▁", a WordPiece token without "##"), continuations bare; ``normalize`` (e.g. the student's
    lower-casing) applied to the text."""
    wordpiece = _is_wordpiece(tok)
    specials = set(tok.all_special_tokens)
    ids = range(len(tok)) if ids is None else ids
    out = []
    for t in tok.convert_ids_to_tokens(list(ids)):
        t = t or ""
        if t in specials:
            out.append(t)
            continue
        if wordpiece:
            form = t[2:] if t.startswith("##") else "▁" + t
        elif t[:1] in ("Ġ", "▁"):
            form = "▁" + t[1:]
        else:
            form = t
        out.append(normalize(form) if normalize else form)
    return out


def _is_wordpiece(tok) -> bool:
    backend = getattr(tok, "backend_tokenizer", None)
    return backend is not None and type(backend.model).__name__ == "WordPiece"


def _normalizer(tok):
    backend = getattr(tok, "backend_tokenizer", None)
    norm = backend.normalizer if backend is not None else None
    return None if norm is None else norm.normalize_str


def vocab_map(teacher_tok, student_tok) -> np.ndarray:
    """Each teacher token id -> the student token id with the same spelling (``canonical_tokens``, in
    the student's normalisation), else the one at minimum edit distance; the teacher's end-of-sequence
    goes to the student's (or its separator)."""
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cdist

    student = canonical_tokens(student_tok)
    teacher = canonical_tokens(teacher_tok, normalize=_normalizer(student_tok))
    exact: dict[str, int] = {}
    for i, form in enumerate(student):
        exact.setdefault(form, i)
    out = np.array([exact.get(form, -1) for form in teacher], dtype=np.int64)
    missing = np.flatnonzero(out < 0)
    for at in range(0, len(missing), 1024):  # all distances in C, 1024 teacher tokens at a time
        rows = missing[at : at + 1024]
        dist = cdist(
            [teacher[i] for i in rows], student, scorer=Levenshtein.distance, dtype=np.int32, workers=-1
        )
        out[rows] = dist.argmin(1)  # the first of the nearest, as rapidfuzz's extractOne picks
    eos = student_tok.eos_token_id if student_tok.eos_token_id is not None else student_tok.sep_token_id
    if teacher_tok.eos_token_id is not None and eos is not None:
        out[teacher_tok.eos_token_id] = eos
    return out


def dtw(a: Sequence[str], b: Sequence[str]) -> list[list[int]]:
    """Dynamic time warping of two token sequences with the character edit distance as the cost (the
    reference's simple DTW): for each position of ``b``, the positions of ``a`` aligned to it."""
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cdist

    n, m = len(a), len(b)
    if not n or not m:
        return [[] for _ in range(m)]
    strip_a = [x.replace("▁", "") for x in a]
    strip_b = [x.replace("▁", "") for x in b]
    cost = cdist(strip_a, strip_b, scorer=Levenshtein.distance).astype(np.float64)
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(n):
        row, prev, c = acc[i + 1], acc[i], cost[i]
        for j in range(m):
            row[j + 1] = c[j] + min(prev[j + 1], row[j], prev[j])
    acc = acc[1:, 1:]
    i, j = n - 1, m - 1
    to_a: list[list[int]] = [[] for _ in range(m)]
    while i > 0 or j > 0:
        to_a[j].append(i)
        diag = acc[i - 1, j - 1] if i > 0 and j > 0 else np.inf
        up = acc[i - 1, j] if i > 0 else np.inf
        left = acc[i, j - 1] if j > 0 else np.inf
        move = int(np.argmin([diag, up, left]))
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    to_a[0].append(0)
    return [sorted(x) for x in to_a]


def content_positions(labels: Sequence[int]) -> list[int]:
    """Positions t whose next token is an answer token (the positions a causal LM is scored at)."""
    return [t for t in range(len(labels) - 1) if labels[t + 1] != -100]


def mined_alignment(
    student_feat: dict, teacher_feat: dict, student_tok, teacher_tok, tea2stu: np.ndarray
) -> list[int]:
    """For each student content position (in order), the teacher content position aligned one-to-one
    to it by DTW over the input tokens, kept only where the teacher's token maps to the student's; -1
    elsewhere (the loss then uses the one-hot target there)."""
    sp = content_positions(student_feat["labels"])
    tp = content_positions(teacher_feat["labels"])
    s_ids = [student_feat["input_ids"][t] for t in sp]
    t_ids = [teacher_feat["input_ids"][t] for t in tp]
    norm = _normalizer(student_tok)
    s_tok = canonical_tokens(student_tok, s_ids)
    t_tok = canonical_tokens(teacher_tok, t_ids, normalize=norm)
    out = []
    for k, aligned in enumerate(dtw(t_tok, s_tok)):
        j = aligned[0] if len(aligned) == 1 else -1
        out.append(j if j >= 0 and int(tea2stu[t_ids[j]]) == s_ids[k] else -1)
    return out


# ------------------------------------------------------------------ losses


def _content(logits, labels):
    """(logits at the positions predicting answer tokens, those targets), per row as lists."""
    out = []
    for b in range(labels.shape[0]):
        pos = (labels[b, 1:] != -100).nonzero().flatten()
        out.append((logits[b, pos], labels[b, pos + 1], pos))
    return out


def cross_entropy(logits, labels):
    import torch.nn.functional as F

    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100, reduction="mean"
    )


def uld_loss(s_logits, s_labels, t_logits, t_labels, temperature: float = 1.0):
    """ULD: per row, the answer positions of both sides from the start, cut to the shorter; the L1
    distance of the sorted probabilities at each (zero-padded to one vocabulary size), averaged over the
    row's positions, then over the rows."""
    import torch
    import torch.nn.functional as F

    losses = []
    for (sl, _, _), (tl, _, _) in zip(
        _content(s_logits, s_labels), _content(t_logits, t_labels), strict=True
    ):
        n = min(len(sl), len(tl))
        if n == 0:
            continue
        ps = torch.softmax(sl[:n].float() / temperature, -1).sort(-1, descending=True).values
        pt = torch.softmax(tl[:n].float() / temperature, -1).sort(-1, descending=True).values
        gap = ps.shape[-1] - pt.shape[-1]
        if gap > 0:
            pt = F.pad(pt, (0, gap))
        elif gap < 0:
            ps = F.pad(ps, (0, -gap))
        losses.append((ps - pt).abs().sum(-1).mean())
    return torch.stack(losses).mean() if losses else s_logits.sum() * 0.0


def forward_kl(student_logits, teacher_logits, temperature: float = 1.0):
    """KL(teacher || student) per position at a temperature (rows of logits over one vocabulary)."""
    import torch

    lp_s = torch.log_softmax(student_logits.float() / temperature, -1)
    lp_t = torch.log_softmax(teacher_logits.float() / temperature, -1)
    return (lp_t.exp() * (lp_t - lp_s)).sum(-1)


def mined_teacher_logits(t_logits_row, s_targets, alignment: Sequence[int], tea2stu, vocab_size: int):
    """The teacher's logits carried into the student vocabulary at each student content position:
    aligned positions take, for every student token, the max of the teacher logits mapped to it
    (-1e5 where none is); unaligned ones (or where no teacher token maps anywhere) the one-hot target
    (100 on it, -1e5 elsewhere)."""
    import torch

    n = len(alignment)
    out = torch.full((n, vocab_size), -1e5, dtype=torch.float32, device=t_logits_row.device)
    idx = torch.as_tensor([max(a, 0) for a in alignment], device=t_logits_row.device)
    src = t_logits_row[idx].float()
    index = tea2stu.to(t_logits_row.device).unsqueeze(0).expand(n, -1)
    out = out.scatter_reduce(1, index, src, reduce="amax", include_self=True)
    aligned = torch.as_tensor([a >= 0 for a in alignment], device=out.device) & (out.max(-1).values > -1e5)
    onehot = torch.full_like(out, -1e5)
    onehot[torch.arange(n), s_targets] = 100.0
    return torch.where(aligned.unsqueeze(-1), out, onehot)


def mined_loss(s_logits, s_labels, t_logits, t_labels, alignments, tea2stu, temperature: float = 1.0):
    import torch

    total, count = s_logits.new_zeros((), dtype=torch.float32), 0
    for (sl, st, _), (tl, _, _), al in zip(
        _content(s_logits, s_labels), _content(t_logits, t_labels), alignments, strict=True
    ):
        n = min(len(sl), len(al))
        if n == 0:
            continue
        target = mined_teacher_logits(tl, st[:n], al[:n], tea2stu, sl.shape[-1])
        total = total + forward_kl(sl[:n], target, temperature).sum()
        count += n
    return total / max(count, 1)


def build_projectors(d_student: int, d_teacher: int):
    """DSKD-CMA's projectors: the query (student [input; target] embeddings -> teacher key space), the
    student's hidden states into the teacher's space and the teacher's into the student's."""
    import torch.nn as nn

    return nn.ModuleDict(
        {
            "query": nn.Linear(2 * d_student, 2 * d_teacher),
            "s2t": nn.Linear(d_student, d_teacher),
            "t2s": nn.Linear(d_teacher, d_student),
        }
    )


def dskd_loss(student, teacher, projectors, s_ids, s_labels, t_ids, t_labels, s_out, t_out, temperature=2.0):
    """DSKD with cross-model attention (the DSKD repo's criterion, each term averaged over its valid
    positions): t2s cross-entropy (trains the projectors through the student's frozen head) + t2s KL into
    the student where the projected teacher predicts the target + s2t KL in the teacher's space."""
    import torch

    s_tgt = torch.cat([s_labels[:, 1:], torch.full_like(s_labels[:, :1], -100)], 1)
    t_tgt = torch.cat([t_labels[:, 1:], torch.full_like(t_labels[:, :1], -100)], 1)
    s_mask, t_mask = s_tgt != -100, t_tgt != -100
    s_emb, t_emb = student.get_input_embeddings(), teacher.get_input_embeddings()
    zero = torch.zeros_like
    s_index = torch.cat(
        [s_emb(torch.where(s_mask, s_ids, zero(s_ids))), s_emb(torch.where(s_mask, s_tgt, zero(s_tgt)))], -1
    ).detach()
    t_in = t_emb(torch.where(t_mask, t_ids, zero(t_ids))).detach()
    t_target_emb = t_emb(torch.where(t_mask, t_tgt, zero(t_tgt))).detach()
    t_index = torch.cat([t_in, t_target_emb], -1)
    hid_s = s_out.hidden_states[-1]
    hid_t = t_out.hidden_states[-1].detach()
    q = projectors["query"](s_index).float()
    k = (t_index / t_index.std()).float()
    v_t = projectors["t2s"](hid_t / hid_t.std() + t_target_emb / t_target_emb.std()).float()
    v_s = projectors["s2t"](hid_s).float()
    align = q @ k.transpose(-1, -2) / math.sqrt(2 * hid_t.shape[-1])
    pair = s_mask.float().unsqueeze(-1) * t_mask.float().unsqueeze(1)
    align = align + (1.0 - pair) * -1e5
    head_s = student.get_output_embeddings().weight.detach()
    head_t = teacher.get_output_embeddings().weight.detach()
    t2s_logits = torch.softmax(align, -1) @ v_t @ head_s.float().T
    n_s = s_mask.sum().clamp(min=1)
    ce = torch.nn.functional.cross_entropy(
        t2s_logits.flatten(0, 1), s_tgt.flatten(), ignore_index=-100, reduction="sum"
    )
    t2s_ce = ce / n_s
    hit = (t2s_logits.argmax(-1) == s_tgt) & s_mask
    t2s_kd = (forward_kl(s_out.logits, t2s_logits.detach(), temperature) * hit).sum() / n_s
    s2t_logits = torch.softmax(align.transpose(-1, -2), -1) @ v_s @ head_t.float().T
    s2t_kd = (forward_kl(s2t_logits, t_out.logits.detach(), temperature) * t_mask).sum() / t_mask.sum().clamp(
        min=1
    )
    parts = {
        "t2s_ce": t2s_ce.item(),
        "t2s_kd": t2s_kd.item(),
        "s2t_kd": s2t_kd.item(),
        "t2s_hit": int(hit.sum()),
    }
    return t2s_ce + t2s_kd + s2t_kd, parts


# ------------------------------------------------------------------ training


def prepare(
    student_tok, teacher_tok, conversations: Sequence[list[dict]], max_length: int, loss: str
) -> tuple[list[dict], int, np.ndarray | None]:
    """Both sides' features for every row that has answer tokens under both tokenizers within
    ``max_length`` (and, for MinED, the vocabulary map and each row's alignment); the count of rows
    left out."""
    tea2stu = vocab_map(teacher_tok, student_tok) if loss == "mined" else None
    rows, skipped = [], 0
    for conv in conversations:
        s = row_features(student_tok, conv or [], max_length)
        t = row_features(teacher_tok, conv or [], max_length)
        if s is None or t is None or not content_positions(s["labels"]) or not content_positions(t["labels"]):
            skipped += 1  # no answer token left on one side (none, or cut away by max_length)
            continue
        row = {"student": s, "teacher": t}
        if tea2stu is not None:
            row["alignment"] = mined_alignment(s, t, student_tok, teacher_tok, tea2stu)
        rows.append(row)
    return rows, skipped, tea2stu


def kd_step(student, teacher, projectors, batch: list[dict], loss: str, kd_weight: float, temperature,
            tea2stu, pads: tuple[int, int]):  # fmt: skip
    """One batch's loss (and its parts): the student's cross-entropy mixed with the chosen KD term."""
    import torch

    device = next(student.parameters()).device
    s_ids, s_labels, s_mask = (t.to(device) for t in pad_features([r["student"] for r in batch], pads[0]))
    out = student(input_ids=s_ids, attention_mask=s_mask, output_hidden_states=loss == "dskd")
    ce = cross_entropy(out.logits, s_labels)
    if loss == "ce":
        return ce, {"ce": ce.item()}
    t_ids, t_labels, t_mask = (t.to(device) for t in pad_features([r["teacher"] for r in batch], pads[1]))
    with torch.no_grad():
        t_out = teacher(input_ids=t_ids, attention_mask=t_mask, output_hidden_states=loss == "dskd")
    parts: dict[str, Any] = {}
    if loss == "uld":
        kd = uld_loss(out.logits, s_labels, t_out.logits, t_labels, temperature)
    elif loss == "mined":
        kd = mined_loss(
            out.logits, s_labels, t_out.logits, t_labels, [r["alignment"] for r in batch],
            torch.as_tensor(tea2stu), temperature,
        )  # fmt: skip
    else:
        kd, parts = dskd_loss(
            student, teacher, projectors, s_ids, s_labels, t_ids, t_labels, out, t_out, temperature
        )
    total = (1 - kd_weight) * ce + kd_weight * kd
    return total, {"ce": ce.item(), "kd": kd.item(), **parts}


def train_xtok(
    student_path: str,
    teacher_path: str,
    conversations: Sequence[list[dict]],
    out: Path,
    *,
    loss: str = "uld",
    kd_weight: float = 0.5,
    temperature: float = 1.0,
    epochs: float = 1.0,
    max_steps: int | None = None,
    batch_size: int = 4,
    lr: float = 5e-4,
    projector_lr: float = 1e-3,
    max_length: int = 512,
    seed: int = 0,
    progress: Callable | None = None,
) -> dict[str, Any]:
    """Full fine-tuning of the student on the rows' answers with the cross-entropy and one
    cross-tokenizer KD loss against the frozen teacher (``loss: ce`` is the baseline without a teacher).
    AdamW, cosine decay, gradient clipping at 1 (DSKD's settings); DSKD's projectors train at their own
    rate and are saved beside the student as ``projector.pt``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    torch.manual_seed(seed)
    s_tok = AutoTokenizer.from_pretrained(student_path)
    t_tok = AutoTokenizer.from_pretrained(teacher_path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    student = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32).to(device)
    teacher = None
    if loss != "ce":
        teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32).to(device).eval()
        teacher.requires_grad_(False)
    rows, skipped, tea2stu = prepare(s_tok, t_tok, conversations, max_length, loss)
    if not rows:
        raise ValueError("no row has an answer under both tokenizers")
    projectors = None
    groups = [{"params": [p for p in student.parameters() if p.requires_grad], "lr": lr}]
    if loss == "dskd":
        projectors = build_projectors(student.config.hidden_size, teacher.config.hidden_size).to(device)
        groups.append({"params": list(projectors.parameters()), "lr": projector_lr})
    optim = torch.optim.AdamW(groups, weight_decay=0.01)
    per_epoch = math.ceil(len(rows) / batch_size)
    total = max_steps or max(1, math.ceil(per_epoch * epochs))
    sched = get_cosine_schedule_with_warmup(optim, 0, total)
    rng = np.random.default_rng(seed)
    pads = (
        s_tok.pad_token_id if s_tok.pad_token_id is not None else 0,
        t_tok.pad_token_id if t_tok.pad_token_id is not None else (t_tok.eos_token_id or 0),
    )
    student.train()
    history: list[dict] = []
    order: list[int] = []
    start = time.perf_counter()
    for step in range(total):
        if len(order) < batch_size:
            order += rng.permutation(len(rows)).tolist()
        batch = [rows[i] for i in order[:batch_size]]
        order = order[batch_size:]
        value, parts = kd_step(
            student, teacher, projectors, batch, loss, kd_weight, temperature, tea2stu, pads
        )
        optim.zero_grad()
        value.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        optim.step()
        sched.step()
        history.append({"loss": value.item(), **parts})
        if progress is not None:
            progress(step + 1, total, "steps")
    seconds = time.perf_counter() - start
    student.eval()
    out = Path(out)
    student.cpu().save_pretrained(out)
    s_tok.save_pretrained(out)
    if projectors is not None:
        torch.save(projectors.cpu().state_dict(), out / "projector.pt")
    result: dict[str, Any] = {
        "loss": loss,
        "examples": len(rows),
        "rows_without_answer": skipped,
        "steps": total,
        "seconds": round(seconds, 2),
        "losses": [round(h["loss"], 5) for h in history],
        "ce_first": history[0]["ce"],
        "ce_last": history[-1]["ce"],
    }
    if loss != "ce":
        result["kd_first"], result["kd_last"] = history[0]["kd"], history[-1]["kd"]
    if loss == "mined":
        aligned = sum(a >= 0 for r in rows for a in r["alignment"])
        result["aligned_share"] = aligned / max(1, sum(len(r["alignment"]) for r in rows))
    return result


def build_wordpiece_student(encoder: str, out: Path, layers: int = 4, seed: int = 0) -> Path:
    """A small causal LM on a BERT encoder's WordPiece vocabulary (MiniLM's, offline): a Llama of the
    encoder's width and ``layers`` layers, its token embeddings (tied to the head) copied from the
    encoder's, the rest random, and a plain chat template whose turns end with [SEP] (its end of
    sequence). The student for distillation across tokenizers from SmolLM2."""
    import torch
    from transformers import AutoModel, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(encoder)
    enc = AutoModel.from_pretrained(encoder)
    width = enc.config.hidden_size
    heads = enc.config.num_attention_heads
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512,
        tie_word_embeddings=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    # a plain template whose turns end with [SEP], the end-of-sequence token
    tok.chat_template = STUDENT_TEMPLATE
    tok.eos_token = tok.sep_token
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(enc.get_input_embeddings().weight)
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
