"""Structured pruning of a Llama-style model (LLM-Pruner, Ma et al., NeurIPS 2023): whole attention head
groups and MLP channels removed by importance, the result a smaller plain transformers checkpoint.

Groups: an MLP channel j of a layer is row j of ``gate_proj`` and ``up_proj`` and column j of
``down_proj``; an attention group is one key/value head with the query heads that share it (GQA groups
are kept whole, so the model stays a valid GQA model): its rows of ``q_proj``, ``k_proj``, ``v_proj``
and its columns of ``o_proj``. Importance of a group: ``taylor`` = sum over its weights of |w * dL/dw|,
the first-order estimate of the loss change from removing them (LLM-Pruner's element-wise first-order
criterion), with the gradient of the causal LM loss on calibration rows; ``magnitude`` = the sum of
squared weights. Every layer keeps the same number of groups (so the checkpoint has one
``intermediate_size`` and head count and loads anywhere); in each layer the most important are kept.
The number of head groups kept follows the target fraction (at least one, and a head count that divides
the hidden size, which transformers requires), and the MLP width is then set so that the whole model,
embeddings included, has ``target`` of its parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataflywheel.errors import FlywheelError
from dataflywheel.train.tokenize import pad_features, sft_features


def _layers(model):
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not all(hasattr(layer, "mlp") and hasattr(layer, "self_attn") for layer in layers):
        raise FlywheelError(
            "prune: the model is not a Llama-style decoder (model.layers[i].self_attn / .mlp)"
        )
    return layers


def count_parameters(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def group_importance(model, kind: str) -> tuple[list, list]:
    """Per layer, the importance of each attention group [kv heads] and of each MLP channel [width]."""
    import torch

    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_group = cfg.num_attention_heads // cfg.num_key_value_heads

    def score(w) -> torch.Tensor:
        if kind == "taylor":
            if w.grad is None:
                raise FlywheelError("prune: taylor importance needs gradients (no calibration loss ran)")
            return (w.detach() * w.grad).abs()
        return w.detach() ** 2

    heads, channels = [], []
    for layer in _layers(model):
        a, m = layer.self_attn, layer.mlp
        q = score(a.q_proj.weight).view(cfg.num_attention_heads, head_dim, -1).sum(dim=(1, 2))
        o = score(a.o_proj.weight).view(-1, cfg.num_attention_heads, head_dim).sum(dim=(0, 2))
        k = score(a.k_proj.weight).view(cfg.num_key_value_heads, head_dim, -1).sum(dim=(1, 2))
        v = score(a.v_proj.weight).view(cfg.num_key_value_heads, head_dim, -1).sum(dim=(1, 2))
        heads.append((q + o).view(cfg.num_key_value_heads, per_group).sum(1) + k + v)
        channels.append(
            score(m.gate_proj.weight).sum(1)
            + score(m.up_proj.weight).sum(1)
            + score(m.down_proj.weight).sum(0)
        )
    return heads, channels


def _calibration_grads(model, tok, conversations: list[list[dict]], max_length: int, batch_size: int) -> int:
    """Accumulate the gradient of the mean causal LM loss (response tokens) over the calibration rows."""

    feats = [f for f in (sft_features(tok, c, max_length) for c in conversations) if f is not None]
    if not feats:
        raise FlywheelError("prune: no calibration row has a response")
    model.zero_grad(set_to_none=True)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for start in range(0, len(feats), batch_size):
        group = feats[start : start + batch_size]
        ids, labels, mask = pad_features(group, pad)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        (loss * len(group) / len(feats)).backward()
    return len(feats)


def plan_sizes(cfg, total: int, target: float) -> tuple[int, int]:
    """(key/value head groups kept, MLP width kept) per layer for ``target`` of ``total`` parameters."""
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
    head_dim = getattr(cfg, "head_dim", None) or hidden // cfg.num_attention_heads
    per_group = cfg.num_attention_heads // cfg.num_key_value_heads
    group_params = hidden * head_dim * (2 * per_group + 2)  # q and o of its query heads, k and v
    channel_params = 3 * hidden
    layer_params = cfg.num_key_value_heads * group_params + cfg.intermediate_size * channel_params
    removable = layers * layer_params
    fixed = total - removable
    wanted = target * total - fixed
    if wanted <= 0:
        raise FlywheelError(f"prune: target {target} is below the parameters outside the layers")
    fraction = min(1.0, wanted / removable)
    planned = cfg.num_key_value_heads * fraction
    # transformers refuses a config whose hidden size is not a multiple of its head count
    valid = [k for k in range(1, cfg.num_key_value_heads + 1) if hidden % (k * per_group) == 0]
    kv = min(valid, key=lambda k: (abs(k - planned), -k))
    width = round((wanted / layers - kv * group_params) / channel_params)
    width = max(8, min(cfg.intermediate_size, width))
    return kv, width


def _keep_rows(linear, rows, torch):
    new = torch.nn.Linear(linear.in_features, len(rows), bias=linear.bias is not None)
    new.weight.data = linear.weight.data[rows].clone()
    if linear.bias is not None:
        new.bias.data = linear.bias.data[rows].clone()
    return new


def _keep_cols(linear, cols, torch):
    new = torch.nn.Linear(len(cols), linear.out_features, bias=linear.bias is not None)
    new.weight.data = linear.weight.data[:, cols].clone()
    if linear.bias is not None:
        new.bias.data = linear.bias.data.clone()
    return new


def apply_pruning(model, heads: list, channels: list, kv_keep: int, width: int) -> dict[str, list]:
    """Keep, in every layer, the ``kv_keep`` most important attention groups and the ``width`` most
    important MLP channels (in their original order); update the config. Returns what was kept."""
    import torch

    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_group = cfg.num_attention_heads // cfg.num_key_value_heads
    kept: dict[str, list] = {"groups": [], "channels": []}
    for layer, h, c in zip(_layers(model), heads, channels, strict=True):
        groups = sorted(torch.topk(h, kv_keep).indices.tolist())
        chans = sorted(torch.topk(c, width).indices.tolist())
        kept["groups"].append(groups)
        kept["channels"].append(chans)
        q_heads = [g * per_group + i for g in groups for i in range(per_group)]
        q_rows = [hd * head_dim + d for hd in q_heads for d in range(head_dim)]
        kv_rows = [g * head_dim + d for g in groups for d in range(head_dim)]
        a, m = layer.self_attn, layer.mlp
        a.q_proj = _keep_rows(a.q_proj, q_rows, torch)
        a.k_proj = _keep_rows(a.k_proj, kv_rows, torch)
        a.v_proj = _keep_rows(a.v_proj, kv_rows, torch)
        a.o_proj = _keep_cols(a.o_proj, q_rows, torch)
        m.gate_proj = _keep_rows(m.gate_proj, chans, torch)
        m.up_proj = _keep_rows(m.up_proj, chans, torch)
        m.down_proj = _keep_cols(m.down_proj, chans, torch)
        for attr, value in (("num_heads", len(q_heads)), ("num_key_value_heads", kv_keep)):
            if hasattr(a, attr):
                setattr(a, attr, value)
        if hasattr(m, "intermediate_size"):
            m.intermediate_size = width
    cfg.num_attention_heads = kv_keep * per_group
    cfg.num_key_value_heads = kv_keep
    cfg.intermediate_size = width
    cfg.head_dim = head_dim
    return kept


def prune_model(
    base: str,
    conversations: list[list[dict]],
    out: Path,
    target: float = 0.7,
    importance: str = "taylor",
    max_length: int = 512,
    batch_size: int = 4,
) -> dict[str, Any]:
    """Prune ``base`` to ``target`` of its parameters and save the result (and tokenizer) at ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importance not in ("taylor", "magnitude"):
        raise FlywheelError(f"prune: unknown importance {importance!r}; taylor or magnitude")
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    before = count_parameters(model)
    rows = (
        _calibration_grads(model, tok, conversations, max_length, batch_size) if importance == "taylor" else 0
    )
    with torch.no_grad():
        heads, channels = group_importance(model, importance)
        kv_keep, width = plan_sizes(model.config, before, target)
        kept = apply_pruning(model, heads, channels, kv_keep, width)
    model.zero_grad(set_to_none=True)
    after = count_parameters(model)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    disk = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    return {
        "importance": importance,
        "calibration_rows": rows,
        "parameters_before": before,
        "parameters_after": after,
        "kept_fraction": round(after / before, 4),
        "kv_heads": kv_keep,
        "attention_heads": model.config.num_attention_heads,
        "intermediate_size": width,
        "bytes_on_disk": disk,
        "kept_groups_layer0": kept["groups"][0],
    }
