"""Structured pruning: the pruned model computes exactly what the original computes with the removed
heads and channels zeroed; importance by magnitude and by first-order Taylor against independent
computations; sizes planned to the target; the saved checkpoint loads as a plain transformers model."""

from __future__ import annotations

import copy

import pytest
import torch

from dataflywheel.errors import FlywheelError
from dataflywheel.train.prune import (
    apply_pruning,
    count_parameters,
    group_importance,
    plan_sizes,
    prune_model,
)


def small_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=96, hidden_size=48, intermediate_size=48, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=3, head_dim=8, max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def test_the_pruned_model_equals_the_original_with_the_removed_groups_zeroed():
    model = small_llama()
    heads, channels = group_importance(model, "magnitude")
    pruned = copy.deepcopy(model)
    kept = apply_pruning(pruned, heads, channels, kv_keep=2, width=20)
    masked = copy.deepcopy(model)
    hd, per = 8, 2
    with torch.no_grad():
        for layer, groups, chans in zip(masked.model.layers, kept["groups"], kept["channels"], strict=True):
            gone = [g for g in range(3) if g not in groups]
            for g in gone:
                q = slice(g * per * hd, (g + 1) * per * hd)
                layer.self_attn.q_proj.weight[q] = 0
                layer.self_attn.o_proj.weight[:, q] = 0
                layer.self_attn.k_proj.weight[g * hd : (g + 1) * hd] = 0
                layer.self_attn.v_proj.weight[g * hd : (g + 1) * hd] = 0
            off = [c for c in range(48) if c not in chans]
            layer.mlp.gate_proj.weight[off] = 0
            layer.mlp.up_proj.weight[off] = 0
    ids = torch.randint(0, 96, (2, 12))
    with torch.no_grad():
        assert torch.allclose(pruned(ids).logits, masked(ids).logits, atol=1e-5)
    c = pruned.config
    assert (c.num_attention_heads, c.num_key_value_heads, c.intermediate_size) == (4, 2, 20)
    assert pruned.model.layers[0].self_attn.q_proj.weight.shape == (32, 48)
    assert pruned.model.layers[0].mlp.down_proj.weight.shape == (48, 20)


def test_magnitude_keeps_the_heaviest_groups_of_each_layer():
    model = small_llama()
    with torch.no_grad():
        layer = model.model.layers[1]
        layer.mlp.up_proj.weight[[3, 7]] *= 100  # two channels far heavier than the rest
        layer.self_attn.v_proj.weight[16:24] *= 100  # key/value group 2
    heads, channels = group_importance(model, "magnitude")
    kept = apply_pruning(model, heads, channels, kv_keep=1, width=2)
    assert kept["channels"][1] == [3, 7] and kept["groups"][1] == [2]


def test_taylor_importance_is_the_sum_of_weight_times_gradient(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dataflywheel.train.prune import _calibration_grads
    from dataflywheel.train.tokenize import sft_features

    rows = [
        [
            {"role": "user", "content": f"Count to {i}."},
            {"role": "assistant", "content": "one two three " * i},
        ]
        for i in range(1, 4)
    ]
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    assert _calibration_grads(model, tok, rows, 128, batch_size=1) == 3
    heads, channels = group_importance(model, "taylor")
    # independently: each row's mean next-token cross-entropy on its response, averaged over the rows
    again = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    total = 0
    for conv in rows:
        f = sft_features(tok, conv, 128)
        ids, labels = torch.tensor([f["input_ids"]]), torch.tensor(f["labels"][1:])
        logits = again(ids).logits[0, :-1]
        keep = labels != -100
        total = total + torch.nn.functional.cross_entropy(logits[keep], labels[keep]) / len(rows)
    total.backward()
    mlp = again.model.layers[1].mlp
    want = (
        (mlp.gate_proj.weight * mlp.gate_proj.weight.grad).abs().sum(1)
        + (mlp.up_proj.weight * mlp.up_proj.weight.grad).abs().sum(1)
        + (mlp.down_proj.weight * mlp.down_proj.weight.grad).abs().sum(0)
    )
    assert torch.allclose(channels[1], want, rtol=1e-4, atol=1e-9) and want.abs().sum() > 0
    a = again.model.layers[0].self_attn  # key/value group 0: kv head 0 and query heads 0 and 1 (head_dim 8)
    g0 = sum((w.weight[:8] * w.weight.grad[:8]).abs().sum() for w in (a.k_proj, a.v_proj))
    g0 = g0 + (a.q_proj.weight[:16] * a.q_proj.weight.grad[:16]).abs().sum()
    g0 = g0 + (a.o_proj.weight[:, :16] * a.o_proj.weight.grad[:, :16]).abs().sum()
    assert heads[0][0].item() == pytest.approx(g0.item(), rel=1e-4)


def test_prune_model_meets_the_target_and_saves_a_loadable_checkpoint(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    rows = [
        [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello there, friend."}]
    ] * 4
    stats = prune_model(tiny_llama, rows, tmp_path / "pruned", target=0.995, importance="taylor")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")
    assert count_parameters(loaded) == stats["parameters_after"] < stats["parameters_before"]
    assert stats["kept_fraction"] == pytest.approx(0.995, abs=0.002)
    assert (loaded.config.num_key_value_heads, loaded.config.intermediate_size) == (
        stats["kv_heads"],
        stats["intermediate_size"],
    )
    assert stats["calibration_rows"] == 4 and stats["bytes_on_disk"] > 0
    with torch.no_grad():
        assert torch.isfinite(loaded(torch.tensor([[1, 2, 3]])).logits).all()
    with pytest.raises(FlywheelError, match="below the parameters outside the layers"):
        plan_sizes(loaded.config, count_parameters(loaded), 0.5)  # the embeddings alone are > 50%
