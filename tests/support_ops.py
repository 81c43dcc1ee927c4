"""Small operators used only by the tests, to drive every kind of step through the engine."""

from __future__ import annotations

import os
import time

import pyarrow as pa
from pydantic import Field

from dataflywheel.ops.base import Generator, Mapper, OpParams, Scorer


class UpperResponse(Mapper):
    """Upper-cases the last assistant turn; optionally slow, and logs each batch to a file."""

    class Params(OpParams):
        sleep: float = Field(0.0, description="seconds to sleep per batch")
        log: str | None = Field(None, description="append one line per processed batch here")
        only_short: bool = Field(False, description="change only responses under 80 characters")

    reads = ("messages",)
    writes = ("messages",)

    def map(self, batch: pa.Table) -> pa.Table:
        if self.params.log:
            with open(self.params.log, "a") as fh:
                fh.write(f"{os.getpid()} {batch.num_rows}\n")
        time.sleep(self.params.sleep)
        convs = batch.column("messages").to_pylist()
        for conv in convs:
            last = conv[-1]
            if last["role"] == "assistant" and (not self.params.only_short or len(last["content"]) < 80):
                last["content"] = last["content"].upper()
        return batch.set_column(
            batch.schema.get_field_index("messages"),
            "messages",
            pa.array(convs, batch.schema.field("messages").type),
        )


class ResponseChars(Scorer):
    """score_chars: characters in the last assistant turn."""

    reads = ("messages",)
    writes = ("score_chars",)

    def score(self, batch: pa.Table) -> dict:
        return {"score_chars": [float(len(c[-1]["content"])) for c in batch.column("messages").to_pylist()]}


class Paraphrase(Generator):
    """One new row per seed: the seed with 'Rephrased: ' before the instruction."""

    class Params(OpParams):
        budget: int = Field(4, description="rows to make")
        per_batch: int = Field(2, description="rows per yielded batch")

    reads = ("messages",)

    def generate(self, seeds, produced=None):
        done = 0 if produced is None else produced.num_rows
        rows = seeds.to_pylist()
        batch = []
        for seed in rows[done : self.params.budget]:
            msgs = [dict(m) for m in seed["messages"]]
            msgs[0]["content"] = "Rephrased: " + msgs[0]["content"]
            batch.append({"messages": msgs, "parents": [seed["id"]]})
            if len(batch) == self.params.per_batch:
                yield batch
                batch = []
        if batch:
            yield batch
