"""Magpie's tags (Xu et al., ICLR 2025, ``unitag``): an LLM labels each instruction's input quality,
difficulty or task category, for filtering generated data by thresholds on them."""

from __future__ import annotations

import re
from typing import Literal

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.constraint import Constraint
from dataflywheel.ops import prompts
from dataflywheel.ops.llm import LLMParams, LLMScorer
from dataflywheel.ops.parsing import OBJECT, free_chars, json_object, json_shape

LABELS: dict[str, tuple[str, tuple[str, ...]]] = {
    # tag -> (the JSON field the grader answers in, its labels in increasing order)
    "input_quality": ("input_quality", ("very poor", "poor", "average", "good", "excellent")),
    "difficulty": ("difficulty", ("very easy", "easy", "medium", "hard", "very hard")),
    "task_category": (
        "primary_tag",
        (
            "Information seeking", "Reasoning", "Planning", "Editing", "Coding & Debugging", "Math",
            "Role playing", "Data analysis", "Creative writing", "Advice seeking", "Brainstorming", "Others",
        ),
    ),
}  # fmt: skip
PROMPT = {"input_quality": "quality", "difficulty": "difficulty", "task_category": "category"}


class MagpieTag(LLMScorer):
    """Magpie's LLM tags of an instruction (its first user turn): ``input_quality`` (very poor ...
    excellent), ``difficulty`` (very easy ... very hard) or ``task_category`` (one of 12). The grader
    answers a JSON object; the label must be one of the tag's labels (any case), else the reply is
    unparsed: the row's tag stays null, the reply is kept in ``raw_<tag>`` and counted. Writes
    ``tag_<tag>``, and for the two ordinal tags ``score_<tag>`` (1 = the lowest label ... 5).
    Filter with e.g. ``filter: {column: score_input_quality, min: 4}`` (good or excellent).
    """

    class Params(LLMParams):
        tag: Literal["input_quality", "difficulty", "task_category"] = Field(
            "input_quality", description="what the grader labels"
        )
        max_tokens: int = Field(256, ge=1, description="reply length in tokens at most")

    @property
    def column_name(self) -> str:
        return self.params.tag

    def value_columns(self) -> dict[str, pa.DataType]:
        cols = {f"tag_{self.params.tag}": pa.string()}
        if self.params.tag != "task_category":
            cols[f"score_{self.params.tag}"] = pa.float64()
        return cols

    def prompt(self, row: dict) -> list[dict] | None:
        query = next((m["content"] for m in row[S.MESSAGES] or [] if m["role"] == "user"), None)
        if query is None:
            return None
        template = prompts.load(__file__, f"magpie_tag_{PROMPT[self.params.tag]}.txt")
        return [{"role": "user", "content": prompts.fill(template, query=query)}]

    def shape(self) -> Constraint:
        """The prompt's JSON object: free-text fields first (bounded to fit), the label from the list."""
        field, labels = LABELS[self.params.tag]
        text = {"type": "string", "maxLength": max(1, free_chars(self.params.max_tokens) // 3)}
        before = {"input_quality": ["explanation"], "difficulty": ["intent", "knowledge"]}
        properties = {k: text for k in before.get(self.params.tag, [])}
        return json_shape({**properties, field: {"enum": list(labels)}})

    def parse(self, reply: str, row: dict) -> dict | None:
        label = read_label(reply, self.params.tag)
        if label is None:
            return None
        out: dict = {f"tag_{self.params.tag}": label}
        if self.params.tag != "task_category":
            out[f"score_{self.params.tag}"] = float(LABELS[self.params.tag][1].index(label) + 1)
        return out


def read_label(reply: str, tag: str) -> str | None:
    """The label a grader's reply gives for ``tag``: the JSON field (from the first object that parses),
    else a quoted ``"field": "label"`` pair; None unless it is one of the tag's labels."""
    field, labels = LABELS[tag]
    value = None
    for m in OBJECT.finditer(reply):
        got = json_object(m.group(0))
        if got is not None and isinstance(got.get(field), str):
            value = got[field]
            break
    if value is None:
        m = re.search(rf'"{re.escape(field)}"\s*:\s*"([^"]*)"', reply)
        value = m.group(1) if m else None
    if value is None:
        return None
    by_lower = {label.lower(): label for label in labels}
    return by_lower.get(value.strip().lower())
