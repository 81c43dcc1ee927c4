"""Per-turn text and how several turns of a conversation fold into one value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from dataflywheel.data import schema as S

TURN_ROLES = {"instruction": ("user",), "response": ("assistant",)}
AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "mean": lambda v: float(np.mean(v)),
    "min": min,
    "max": max,
    "sum": sum,
    "last": lambda v: v[-1],
}


Aggregate = Literal["mean", "min", "max", "sum", "last"]


def turns(messages: list[dict], field: str) -> list[str]:
    if field == "conversation":
        return [S.conversation_text(messages)]
    return [m["content"] for m in messages if m["role"] in TURN_ROLES[field]]
