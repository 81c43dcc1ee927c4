from __future__ import annotations

import difflib
from typing import Literal

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.lib.text import AGGREGATES
from dataflywheel.ops.base import OpParams, Scorer


class CopiesInstruction(Scorer):
    """``score_response_copy``: how much a response repeats its instruction (0-1, difflib's similarity
    ratio of the lowercased texts). An answer that parrots the question (1.0) teaches nothing.
    Multi-turn: each assistant turn against the user turn before it, combined by ``aggregate``."""

    class Params(OpParams):
        aggregate: Literal["mean", "min", "max"] = Field("max", description="how the turns combine")
        max_chars: int = Field(2000, ge=1, description="compare at most this many characters of each text")

    reads = (S.MESSAGES,)
    writes = ("score_response_copy",)

    def score(self, batch: pa.Table) -> dict:
        agg, n = AGGREGATES[self.params.aggregate], self.params.max_chars
        out = []
        for conv in batch.column(S.MESSAGES).to_pylist():
            values, prev = [], None
            for m in conv:
                if m["role"] == "user":
                    prev = m["content"]
                elif m["role"] == "assistant" and prev is not None:
                    a, b = " ".join(prev.lower().split())[:n], " ".join(m["content"].lower().split())[:n]
                    values.append(difflib.SequenceMatcher(None, a, b, autojunk=False).ratio())
            out.append(agg(values) if values else None)
        return {"score_response_copy": out}
