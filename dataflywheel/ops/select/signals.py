"""The shared shape of heuristic quality signals: per-turn text, per-turn values, aggregated per row.

A signal op names which text it looks at (``fields``: instruction = user turns, response = assistant
turns, conversation = everything) and how several turns of a multi-turn conversation fold into one
value (``aggregate``). It writes ``score_<field>_<signal>`` columns (or ``tag_...`` for categories).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.ops.base import OpParams, Scorer

TURN_ROLES = {"instruction": ("user",), "response": ("assistant",)}
AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "mean": lambda v: float(np.mean(v)),
    "min": min,
    "max": max,
    "sum": sum,
    "last": lambda v: v[-1],
}


Aggregate = Literal["mean", "min", "max", "sum", "last"]


class SignalParams(OpParams):
    fields: list[Literal["instruction", "response", "conversation"]] = Field(
        ["response"], min_length=1, description="texts to score: instruction, response, conversation"
    )
    aggregate: Aggregate = Field("mean", description="how the turns of a multi-turn conversation combine")


def turns(messages: list[dict], field: str) -> list[str]:
    if field == "conversation":
        return [S.conversation_text(messages)]
    return [m["content"] for m in messages if m["role"] in TURN_ROLES[field]]


class SignalScorer(Scorer):
    """Base of the heuristic scorers: subclasses list ``signals`` and compute them for one text."""

    Params: ClassVar[type[OpParams]] = SignalParams
    reads = (S.MESSAGES,)
    signals: ClassVar[tuple[str, ...]] = ()
    prefix: ClassVar[str] = "score"

    def output_columns(self) -> list[str]:
        return [f"{self.prefix}_{f}_{s}" for f in self.params.fields for s in self.signals]

    def measure(self, text: str, context: dict) -> dict[str, float]:
        """Signal name -> value for one turn. ``context`` has the row's messages and the field."""
        raise NotImplementedError

    def score(self, batch: pa.Table) -> dict:
        convs = batch.column(S.MESSAGES).to_pylist()
        agg = AGGREGATES[self.params.aggregate]
        out: dict[str, list] = {c: [] for c in self.output_columns()}
        for conv in convs:
            for field in self.params.fields:
                values: dict[str, list] = {s: [] for s in self.signals}
                for text in turns(conv, field):
                    for name, v in self.measure(text, {"messages": conv, "field": field}).items():
                        values[name].append(v)
                for name in self.signals:
                    vs = values[name]
                    out[f"{self.prefix}_{field}_{name}"].append(self.combine(vs, agg) if vs else None)
        return out

    def combine(self, values: list, agg) -> float | str:
        return agg(values)
