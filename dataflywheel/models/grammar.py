"""Constrained decoding for models that run here (the hf backend, ``flywheel serve``'s decoder): one
llguidance matcher per generated row, a token bitmask per step, the logits of disallowed tokens set to
-inf before the next token is picked.

llguidance rather than xgrammar (vLLM's default): it has no dependencies (xgrammar pulls triton and a
second FFI runtime onto a CPU machine), compiles a grammar lazily with no per-vocabulary precomputation,
and computes a mask for SmolLM2's 49,152 tokens in 0.02-0.5 ms (``python -m bench.structured``).
"""

from __future__ import annotations

import time
import weakref

import numpy as np
from transformers import LogitsProcessor  # this module serves the hf backend, which needs transformers

from dataflywheel.models.constraint import Constraint, ConstraintError, _llguidance

_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Seconds spent in grammar work since the process started (bench/structured.py reads where time goes)
SECONDS = {"mask": 0.0, "consume": 0.0}


def ll_tokenizer(tokenizer, eos: set[int]):
    """llguidance's view of a transformers tokenizer (about 0.2 s to build; cached per tokenizer and
    end-of-turn set). ``eos``: every token that ends a reply, which the grammar allows once complete."""
    key = tuple(sorted(eos))
    per = _TOKENIZERS.setdefault(tokenizer, {})
    if key not in per:
        import llguidance.hf

        try:
            base = llguidance.hf.from_tokenizer(tokenizer, eos_token=list(key))
        except ValueError as e:  # a slow (Python) tokenizer
            raise ConstraintError(f"constrained decoding needs a fast tokenizer: {e}") from None
        per[key] = base.with_slices(SLICES + llguidance.LLTokenizer.general_slices()[1:])
    return per[key]


# llguidance allows whole groups of tokens at once ("slices") where a lexer state accepts every string of
# a group; a token outside every accepted group is checked on its own. The op shapes' free text excludes
# the character its ending starts with ([ for [[k]], : for "Score: k", # for "#### n",
# constraint.ending): with groups that leave those characters out, a mask under such a shape costs 0.8
# ms a step for 64 rows instead of 21 (measured for SmolLM2 in the session that added this).
_ENDS = r"\[:#"
SLICES = [
    r"[\x20\x0A\x0D\x09]+",
    rf'[^"\\\x00-\x1F\x7F{_ENDS}]{{1,10}}',
    rf'[^"\\\x00-\x1F\x7F{_ENDS}]{{1,30}}',
    rf'[^"\\\x00-\x1F\x7F{_ENDS}]+',
]


class RowMatchers:
    """One matcher per generated row, all under one constraint; masks and token consumption per step.

    A matcher whose grammar is complete allows only an end-of-turn token. A row whose matcher failed (it
    was fed a token after its end: padding once its generation has ended) is left unmasked."""

    def __init__(self, lltok, constraint: Constraint, rows: int):
        ll = _llguidance()
        grammar = constraint.llguidance_grammar()
        first = ll.LLMatcher(lltok, grammar, log_level=0)
        if first.is_error():
            raise ConstraintError(f"invalid {constraint.kind}: {first.get_error()}")
        self.matchers = [first] + [first.deep_copy() for _ in range(rows - 1)]
        self.live = [True] * rows
        self.vocab = lltok.vocab_size
        self.words = (self.vocab + 31) // 32
        self.executor = _executor()

    def consume(self, tokens: list[int]) -> None:
        """Each live row's last chosen token."""
        start = time.perf_counter()
        for i, token in enumerate(tokens):
            self.consume_row(i, token)
        SECONDS["consume"] += time.perf_counter() - start

    def consume_row(self, i: int, token: int) -> None:
        if self.live[i]:
            m = self.matchers[i]
            if not m.consume_token(int(token)) or m.is_error():
                self.live[i] = False

    def complete(self) -> list[bool]:
        """Per row: its grammar is complete and allows nothing but the end of the reply."""
        return [live and m.is_stopped() for live, m in zip(self.live, self.matchers, strict=True)]

    def allowed(self):
        """(rows, vocab) booleans: which tokens each row may take next (all, for rows no longer live)."""
        start = time.perf_counter()
        mask = np.full((len(self.matchers), self.words), -1, dtype=np.int32)
        live = [(m, i) for i, m in enumerate(self.matchers) if self.live[i]]
        if live:
            self.executor.unsafe_compute_mask_ptr(live, mask.ctypes.data, self.words * 4, len(self.matchers))
        bits = np.unpackbits(mask.view(np.uint8), axis=1, bitorder="little")[:, : self.vocab].astype(bool)
        SECONDS["mask"] += time.perf_counter() - start
        return bits

    def apply(self, logits, rows: list[int] | None = None):
        """``logits`` ((rows, vocab), a torch tensor) with the disallowed tokens at -inf, as a new tensor:
        the model's own logits stay as they were, so log-probabilities of generated tokens are the
        model's, as vLLM reports them (``rows``: which matchers the logits' rows are, default all)."""
        import torch

        allowed = self.allowed()
        if rows is not None:
            allowed = allowed[rows]
        block = torch.ones(logits.shape, dtype=torch.bool)  # LM-head rows past the vocabulary: never
        vocab = min(self.vocab, logits.shape[-1])
        block[:, :vocab] = torch.from_numpy(~allowed[:, :vocab])
        return logits.masked_fill(block.to(logits.device), float("-inf"))


_EXEC = None


def _executor():
    global _EXEC
    if _EXEC is None:
        _EXEC = _llguidance().LLExecutor()
    return _EXEC


class GrammarLogits(LogitsProcessor):
    """A transformers ``LogitsProcessor``: masks each row's logits to what its grammar allows. The first
    call sees the prompts alone; every later one first feeds each row its last generated token."""

    def __init__(self, matchers: RowMatchers, prompt_width: int):
        self.matchers, self.width = matchers, prompt_width

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] > self.width:
            self.matchers.consume(input_ids[:, -1].tolist())
        return self.matchers.apply(scores)

    def complete_after(self, new) -> list[bool]:
        """After generation (``new``: the generated tokens, (rows, steps)): each row's grammar complete
        once its last token, which no later step fed back, is taken."""
        if new.shape[1]:
            self.matchers.consume(new[:, -1].tolist())
        return self.matchers.complete()
