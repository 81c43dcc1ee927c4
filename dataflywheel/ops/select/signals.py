"""The shared shape of heuristic quality signals: per-turn text, per-turn values, aggregated per row.

A signal op names which text it looks at (``fields``: instruction = user turns, response = assistant
turns, conversation = everything) and how several turns of a multi-turn conversation fold into one
value (``aggregate``). It writes ``score_<field>_<signal>`` columns (or ``tag_...`` for categories).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.lib.text import AGGREGATES, Aggregate, turns
from dataflywheel.ops.base import OpParams, Scorer


class SignalParams(OpParams):
    fields: list[Literal["instruction", "response", "conversation"]] = Field(
        ["response"], min_length=1, description="texts to score: instruction, response, conversation"
    )
    aggregate: Aggregate = Field("mean", description="how the turns of a multi-turn conversation combine")


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
