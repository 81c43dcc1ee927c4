"""Trainer mechanics on a tiny random Llama with SmolLM2's tokenizer: token counts, progress, length
grouping, precision, DPO's precomputed reference. Fast; the real-model tests are in test_trainers.py."""

from __future__ import annotations

import pytest

from dataflywheel.errors import FlywheelError
from dataflywheel.train.tokenize import sft_features
from dataflywheel.train.trainers import TrainSettings, train_dpo, train_sft, use_bf16


@pytest.fixture
def tiny(tiny_llama):
    return tiny_llama


def convs(lengths: list[int]) -> list[list[dict]]:
    return [
        [
            {"role": "user", "content": f"Repeat {i}."},
            {"role": "assistant", "content": " ".join(["word"] * n)},
        ]
        for i, n in enumerate(lengths)
    ]


def settings(**kw) -> TrainSettings:
    return TrainSettings(**{"lora_r": 4, "batch_size": 2, "max_length": 256, "precision": "float32", **kw})


def test_sft_counts_every_real_token_and_reports_progress(tiny, tmp_path):
    from transformers import AutoTokenizer

    rows = convs([3, 40, 5, 60, 8, 2])
    seen = []
    stats = train_sft(tiny, rows, tmp_path / "ckpt", settings(epochs=2), lambda *a: seen.append(a))
    tok = AutoTokenizer.from_pretrained(tiny)
    lengths = [len(sft_features(tok, c, 256)["input_ids"]) for c in rows]
    assert stats["steps"] == 6 and stats["train_tokens"] == 2 * sum(lengths)
    assert stats["padded_tokens"] >= stats["train_tokens"]
    # the manifest rounds seconds to 0.01 s; a tiny model trains in well under a second, so the rate
    # must lie between the token count over the rounded time's two ends
    secs = stats["train_seconds"]
    assert secs > 0
    fastest = stats["train_tokens"] / max(secs - 0.005, 1e-9)
    slowest = stats["train_tokens"] / (secs + 0.005)
    assert slowest - 0.05 <= stats["tokens_per_second"] <= fastest + 0.05
    assert [(done, total) for done, total, _ in seen] == [(k, 6) for k in range(1, 7)]
    assert "tok/s" in seen[-1][2] and "loss" in seen[-1][2] and seen[-1][2].endswith("0 s left")
    assert (tmp_path / "ckpt" / "model.safetensors").exists() and stats["save_seconds"] >= 0


def test_length_grouping_pads_less_with_the_same_tokens(tiny, tmp_path):
    rows = convs([2, 90, 3, 80, 4, 70, 5, 60] * 2)
    grouped = train_sft(tiny, rows, tmp_path / "a", settings(group_by_length=True))
    shuffled = train_sft(tiny, rows, tmp_path / "b", settings(group_by_length=False))
    assert grouped["train_tokens"] == shuffled["train_tokens"]
    # grouped batches pair rows of similar length: the padding all but disappears
    assert (
        grouped["padded_tokens"] - grouped["train_tokens"]
        < (shuffled["padded_tokens"] - shuffled["train_tokens"]) / 3
    )


def test_precision_choice():
    assert use_bf16("float32") is False and use_bf16("bfloat16") is True
    with pytest.raises(FlywheelError, match="expected auto, float32 or bfloat16"):
        use_bf16("fp8")


def test_dpo_trains_on_precomputed_reference_log_probs(tiny, tmp_path):
    pairs = [
        {
            "prompt": [{"role": "user", "content": f"Say {i}."}],
            "chosen": [{"role": "assistant", "content": f"{i}"}],
            "rejected": [{"role": "assistant", "content": "No " * (i + 1)}],
        }
        for i in range(6)
    ]
    seen = []
    stats = train_dpo(tiny, pairs, tmp_path / "ckpt", settings(), lambda *a: seen.append(a))
    assert stats["steps"] == 3 and [d for d, _, _ in seen] == [1, 2, 3]
    # the reference pass ran before training: only the policy's batches are counted, chosen + rejected
    assert 0 < stats["train_tokens"] <= stats["padded_tokens"]
    assert len(stats["losses"]) == 3 and (tmp_path / "ckpt" / "model.safetensors").exists()


def test_length_buckets_batch_similar_lengths_in_random_order():
    from dataflywheel.train.trainers import LengthBuckets

    lengths = [(i * 37) % 101 for i in range(50)]  # 50 rows, batches of 4: the last batch holds 2
    sampler = LengthBuckets(lengths, batch_size=4, seed=0, window=64)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(50)) and sorted(second) == list(range(50))
    assert first != second  # a fresh order every epoch
    batches = [first[k : k + 4] for k in range(0, 48, 4)]
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert max(spread) <= 12, spread  # one window sorts all 50: neighbours in length share a batch
    firsts = [min(lengths[i] for i in b) for b in batches]
    assert firsts != sorted(firsts)  # batches do not come shortest first
    # the short batch (the two longest rows of the window) comes last, so the loader's cuts stay aligned
    assert sorted(lengths[i] for i in first[48:]) == sorted(lengths)[48:]
    assert list(LengthBuckets(lengths, 4, seed=0)) == first  # a seed fixes the order
    assert list(LengthBuckets(lengths, 4, seed=1)) != first


def test_sft_loss_is_the_models_own_loss(tiny):
    import torch
    from transformers import AutoModelForCausalLM

    from dataflywheel.train.trainers import sft_loss

    model = AutoModelForCausalLM.from_pretrained(tiny)
    ids = torch.tensor([[5, 6, 7, 8, 9, 0], [10, 11, 12, 13, 14, 15]])
    labels = torch.tensor([[-100, -100, 7, 8, 9, -100], [-100, 11, 12, -100, 14, 15]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    expected = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    got = sft_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    # with the accumulation steps' labelled tokens: the same sum over a larger count (7 here + 3 elsewhere)
    summed = sft_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels}, 10)
    assert summed.item() == pytest.approx(expected.item() * 7 / 10, rel=1e-5)


def test_plain_lm_head_gives_trls_fused_outputs(tiny):
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from dataflywheel.train.trainers import _route_plain

    model = AutoModelForCausalLM.from_pretrained(tiny)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    ids = torch.tensor([[5, 6, 7, 8, 9, 0], [10, 11, 12, 13, 14, 15]])
    labels = torch.tensor([[-100, -100, 7, 8, 9, -100], [-100, 11, 12, -100, 14, 15]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    trl = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    _route_plain(model)
    ours = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    for field in ("log_probs", "entropy", "mean_logits"):
        assert torch.allclose(getattr(ours, field), getattr(trl, field), atol=1e-5), field
    assert torch.equal(ours.is_top1, trl.is_top1) and torch.equal(ours.label_mask, trl.label_mask)
    assert ours.loss.item() == pytest.approx(trl.loss.item(), rel=1e-5)
    ours.loss.backward()  # the log-probabilities carry the gradient
    assert any(p.grad is not None for p in model.parameters())
    plain = model(input_ids=ids, attention_mask=mask)  # without fused_lm_head: the model's own forward
    assert plain.logits.shape == (2, 6, model.config.vocab_size)


def test_frozen_weights_held_in_bf16_leave_the_losses_and_the_merged_model_unchanged(
    tiny, tmp_path, monkeypatch
):
    """Under bf16 autocast the frozen linear weights are cast once before training instead of in every
    forward pass: the matmuls see the same bf16 operands, so losses and the merged fp32 weights equal
    those of a run where autocast casts them each time."""
    import contextlib

    import torch
    from safetensors.torch import load_file

    from dataflywheel.train import trainers

    rows = convs([3, 40, 5, 60, 8, 2, 30, 12])
    fast = train_sft(tiny, rows, tmp_path / "fast", settings(precision="bfloat16", epochs=2))
    monkeypatch.setattr(trainers, "_frozen_in_bf16", lambda model, enabled: contextlib.nullcontext(0))
    plain = train_sft(tiny, rows, tmp_path / "plain", settings(precision="bfloat16", epochs=2))
    assert fast["losses"] == plain["losses"] and len(fast["losses"]) == 8
    a = load_file(tmp_path / "fast" / "model.safetensors")
    b = load_file(tmp_path / "plain" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype == torch.float32, k
        assert (a[k] == b[k]).all(), k


def test_frozen_in_bf16_casts_the_frozen_linears_only_and_gives_the_fp32_weights_back(tiny):
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from dataflywheel.train.trainers import _frozen_in_bf16, lora_config

    base = AutoModelForCausalLM.from_pretrained(tiny, dtype="float32")
    model = get_peft_model(base, lora_config(4, 8, 0.0, ["q_proj", "v_proj"]))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with _frozen_in_bf16(model, True) as n:
        dtypes = {name: p.dtype for name, p in model.named_parameters()}
    # 2 layers x (q, k, v, o, gate, up, down); the LM head is the (fp32) embedding, tied
    assert n == 14
    assert {k for k, d in dtypes.items() if d == torch.bfloat16} == {
        k for k in before if "base_layer" in k or ("proj" in k and "lora_" not in k)
    }
    assert dtypes["base_model.model.model.embed_tokens.weight"] == torch.float32
    assert all(dtypes[k] == torch.float32 for k in dtypes if "lora_" in k or "norm" in k)
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[name]), name
    with _frozen_in_bf16(model, False) as n:
        assert n == 0
