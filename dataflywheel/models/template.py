"""One definition of what a scored response is, shared by every backend that holds a tokenizer.

A response is scored after the prompt its conversation renders to under the chat template, with the
assistant header that opens a reply. A conversation with no turns renders to that header alone (IFD's
"direct" score: the answer with no instruction, as Cherry LLM's bare '### Response:'), so the hf and
vllm backends score the same tokens under the same context.
"""

from __future__ import annotations

from typing import Any


def assistant_header(tokenizer: Any) -> str:
    """What the template puts before a reply (e.g. '<|im_start|>assistant\\n')."""
    probe = [{"role": "user", "content": "x"}]
    with_header = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
    without = tokenizer.apply_chat_template(probe, add_generation_prompt=False, tokenize=False)
    return with_header[len(without) :] if with_header.startswith(without) else ""


def render(tokenizer: Any, conversation: list[dict], generation_prompt: bool = True) -> str:
    """The conversation as the model reads it; an empty one with a generation prompt is the header."""
    if not conversation and generation_prompt:
        return assistant_header(tokenizer)
    return tokenizer.apply_chat_template(
        conversation, add_generation_prompt=generation_prompt, tokenize=False
    )


def encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def split_ids(tokenizer: Any, prompt_text: str, response: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the response after it. Encoded together when the prompt's tokens
    are a prefix of the whole (the usual case), else apart, so no token straddles the boundary."""
    prompt = encode(tokenizer, prompt_text)
    full = encode(tokenizer, prompt_text + response)
    if full[: len(prompt)] == prompt:
        return prompt, full[len(prompt) :]
    return prompt, encode(tokenizer, response)


PRE_QUERY_SENTINEL = "PREQUERYSENTINEL7F3A"


def pre_query(tokenizer: Any, history: list[dict] | None = None, chat_template: str | None = None) -> str:
    """The text a chat template puts before a user's words (Magpie's pre-query template): ``history``
    (a system turn, earlier turns) then a user turn, cut where the user's text would begin. Built by
    rendering a sentinel message, so it holds for any template (a default system turn included)."""
    conv = [*(history or []), {"role": "user", "content": PRE_QUERY_SENTINEL}]
    kwargs = {"chat_template": chat_template} if chat_template else {}
    text = tokenizer.apply_chat_template(conv, add_generation_prompt=False, tokenize=False, **kwargs)
    cut = text.find(PRE_QUERY_SENTINEL)
    if cut < 0:
        raise ValueError("the chat template does not show the user's text: no pre-query template")
    return text[:cut]
