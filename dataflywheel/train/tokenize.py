"""Tokenize conversations for SFT with loss on assistant turns only, for any chat template.

Each assistant turn's tokens are found by rendering the conversation up to that turn with and without
the turn: the difference is what the assistant writes (its text and the template's end-of-turn marker).
This needs no {% generation %} markers in the template, so SmolLM2's stock template works as it is.
"""

from __future__ import annotations

from dataflywheel.errors import FlywheelError


def sft_features(tokenizer, messages: list[dict], max_length: int) -> dict | None:
    """input_ids and labels (-100 outside assistant turns), cut to max_length; None without a response."""

    def ids(conv: list[dict], generation_prompt: bool) -> list[int]:
        text = tokenizer.apply_chat_template(conv, add_generation_prompt=generation_prompt, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    full = ids(messages, False)
    labels = [-100] * len(full)
    found = False
    for t, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(ids(messages[:t], True))
        end = len(ids(messages[: t + 1], False))
        if full[:end] != ids(messages[: t + 1], False):
            raise FlywheelError(
                "the chat template renders a conversation differently from its prefixes; "
                "assistant-only loss cannot be located"
            )
        labels[start:end] = full[start:end]
        found = found or end > start
    if not found:
        return None
    return {"input_ids": full[:max_length], "labels": labels[:max_length]}


def pad_features(feats: list[dict], pad_id: int):
    """SFT features right-padded into tensors: (input_ids, labels with -100 on padding, attention_mask)."""
    import torch

    width = max(len(f["input_ids"]) for f in feats)
    ids = torch.full((len(feats), width), pad_id, dtype=torch.long)
    labels = torch.full((len(feats), width), -100, dtype=torch.long)
    mask = torch.zeros((len(feats), width), dtype=torch.long)
    for r, f in enumerate(feats):
        n = len(f["input_ids"])
        ids[r, :n] = torch.tensor(f["input_ids"])
        labels[r, :n] = torch.tensor(f["labels"])
        mask[r, :n] = 1
    return ids, labels, mask
