from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import CHAT
from dataflywheel.models.constraint import Constraint
from dataflywheel.ops.base import Mapper
from dataflywheel.ops.llm import LLMParams, LLMTask, row_error


class Generate(LLMTask, Mapper):
    """Answer each conversation with a model: the reply becomes the final assistant turn, or a column.

    The prompt is the conversation without its final assistant turn, so prompt-only seeds gain a response
    and existing responses are regenerated (teacher data, baselines to judge against). Requests are greedy
    by default and go through the call cache; a request that fails after its retries, or an empty reply,
    leaves the row as it was and records the reason in ``error_generate``.
    """

    class Params(LLMParams):
        output: str = Field("messages", description="messages (the final assistant turn) or a column name")
        system: str | None = Field(None, description="system prompt put before each conversation")
        response_format: Constraint | None = Field(
            None,
            description="the shape every reply must take, enforced while decoding where the model can: "
            "{json_schema: {...}}, {regex: ...}, {choice: [...]} or {grammar: <EBNF>}",
        )

    reads = (S.MESSAGES,)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}
    batch_rows = 64

    def output_columns(self) -> list[str]:
        out = ["error_generate"]
        return [S.MESSAGES, *out] if self.params.output == S.MESSAGES else [self.params.output, *out]

    def prompt(self, row: dict) -> list[dict]:
        system = [{"role": "system", "content": self.params.system}] if self.params.system else []
        return system + S.prompt_of(row[S.MESSAGES])

    def shape(self) -> Constraint | None:
        return self.params.response_format

    def parse(self, reply: str, row: dict) -> dict | None:
        if self.params.response_format is not None and not _fits(reply, self.params.response_format):
            return None  # a reply a model could not be held to: unparsed, counted
        return {"text": reply}

    def map(self, batch: pa.Table) -> pa.Table:
        p = self.params
        rows = batch.to_pylist()
        replies = [r[0] for r in self.ask(rows)]
        texts = [r.values[0]["text"] if r.values else None for r in replies]
        errors = [None if t is not None else row_error([r]) for t, r in zip(texts, replies, strict=True)]
        batch = put_answers(batch, rows, texts, p.output)
        return S.put_column(batch, "error_generate", pa.array(errors, pa.string()))


def _fits(reply: str, shape: Constraint) -> bool:
    """Whether a reply has the shape it was asked for, as far as this can tell without the decoder's
    grammar: one of the choices, JSON for a schema, a full match of a regex Python reads alike (the
    shared syntax mostly is). A grammar is trusted to the model that enforced it."""
    if shape.choice is not None:
        return reply in shape.choice
    if shape.json_schema is not None:
        import json

        try:
            json.loads(reply)
        except ValueError:
            return False
    if shape.regex is not None:
        import re

        try:
            return re.fullmatch(shape.regex, reply) is not None
        except re.error:  # Rust-only syntax: nothing to check it with here
            return True
    return True


def put_answers(batch: pa.Table, rows: list[dict], answers: list[str | None], output: str) -> pa.Table:
    """Answers as each row's final assistant turn (``output: messages``; a row without an answer keeps
    its conversation) or as a text column."""
    if output != S.MESSAGES:
        return S.put_column(batch, output, pa.array(answers, pa.string()))
    new = [
        S.prompt_of(row[S.MESSAGES]) + [{"role": "assistant", "content": a}]
        if a is not None
        else row[S.MESSAGES]
        for row, a in zip(rows, answers, strict=True)
    ]
    return S.put_column(batch, S.MESSAGES, pa.array(new, S.CONVERSATION_TYPE))
