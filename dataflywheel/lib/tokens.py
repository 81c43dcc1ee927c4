"""Training cost in tokens: how long each row is under a named tokenizer's chat template."""

from __future__ import annotations

from functools import cache

import numpy as np
import pyarrow as pa

from dataflywheel.data import schema as S
from dataflywheel.models import template

DEFAULT_TOKENIZER = "embedded:smollm2-135m-instruct"


@cache
def load_tokenizer(name: str):
    """A transformers tokenizer: a local folder, a hub name, or ``embedded:NAME``."""
    from transformers import AutoTokenizer

    from dataflywheel.models import embedded

    return AutoTokenizer.from_pretrained(
        str(embedded.resolve(name)) if name.startswith("embedded:") else name
    )


def row_tokens(table: pa.Table, tokenizer: str = DEFAULT_TOKENIZER) -> np.ndarray:
    """Tokens each row costs to train on: its conversation rendered by the chat template (a preference
    pair: prompt + chosen and prompt + rejected)."""
    tok = load_tokenizer(tokenizer)

    def count(convs: list[list[dict]]) -> list[int]:
        texts = [template.render(tok, c, generation_prompt=False) if c else "" for c in convs]
        return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []

    if S.MESSAGES in table.column_names:
        return np.asarray(count(table.column(S.MESSAGES).to_pylist()), dtype=np.int64)
    prompt = table.column(S.PROMPT).to_pylist()
    chosen = count([p + c for p, c in zip(prompt, table.column(S.CHOSEN).to_pylist(), strict=True)])
    rejected = count([p + r for p, r in zip(prompt, table.column(S.REJECTED).to_pylist(), strict=True)])
    return np.asarray(chosen, dtype=np.int64) + np.asarray(rejected, dtype=np.int64)


def fit_prefix(order: np.ndarray, costs: np.ndarray, budget: int) -> np.ndarray:
    """The longest prefix of ``order`` whose costs add up to at most ``budget``."""
    if len(order) == 0:
        return order
    total = np.cumsum(costs[order])
    return order[: int(np.searchsorted(total, budget, side="right"))]


def most_that_fit(costs: np.ndarray, budget: int) -> int:
    """How many rows at most fit the budget (the cheapest ones): an upper bound on any selection."""
    return int(np.searchsorted(np.cumsum(np.sort(costs)), budget, side="right"))
