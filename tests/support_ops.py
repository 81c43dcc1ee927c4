"""Small operators used only by the tests, to drive every kind of step through the engine."""

from __future__ import annotations

import os
import time

import pyarrow as pa
from pydantic import Field

from dataflywheel.models.base import Sampling
from dataflywheel.ops.base import Evaluator, Generator, GeneratorParams, Mapper, ModelRef, OpParams, Scorer


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
    """``copies`` new rows per seed: the seed with 'Rephrased: ' (and the copy's number) before the
    instruction; logs each seed shard it works on to ``log``."""

    class Params(GeneratorParams):
        copies: int = Field(1, ge=1, description="rows per seed")
        log: str | None = Field(None, description="append one line per generated shard here")

    reads = ("messages",)

    def generate(self, seeds):
        if self.params.log:
            with open(self.params.log, "a") as fh:
                fh.write(f"{seeds.num_rows}\n")
        for seed in seeds.to_pylist():
            for c in range(self.params.copies):
                msgs = [dict(m) for m in seed["messages"]]
                msgs[0]["content"] = f"Rephrased{'' if c == 0 else f' {c}'}: " + msgs[0]["content"]
                yield {"messages": msgs, "parents": [seed["id"]]}


class AskModel(Generator):
    """One new row per seed: the model's answer to the seed's instruction (a model-backed generator)."""

    class Params(GeneratorParams):
        model: str = ModelRef()

    reads = ("messages",)

    def generate(self, seeds):
        model = self.ctx.model(self.params.model)
        for seed in seeds.to_pylist():
            prompt = [m for m in seed["messages"] if m["role"] == "user"][:1]
            (reply,) = model.chat([prompt], Sampling(max_tokens=8))
            yield {
                "messages": [*prompt, {"role": "assistant", "content": reply.text}],
                "parents": [seed["id"]],
            }


class Countdown(Evaluator):
    """value = start / iteration: a metric that falls round by round (drives a loop's `until`)."""

    class Params(OpParams):
        start: float = Field(10.0, description="the value in round 1")

    def evaluate(self):
        return {"value": self.params.start / max(self.ctx.iteration, 1), "round": self.ctx.iteration}
