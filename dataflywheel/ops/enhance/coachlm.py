"""CoachLM (Liu et al., ICDE 2024): revise instruction pairs with a coach model trained on revisions.

Two ops. ``coach_pairs`` turns preference rows (a weaker answer and the one a judge preferred, e.g.
AlpacaEval's GPT-4 annotations read with the ``pairwise`` format) into the coach's training rows: the
fixed meta-instruction with the raw pair "Instruction: ... Response: <weaker>", answered by the revised
pair "Instruction: ... Response: <preferred>", and the character edit distance between the two pairs in
``score_coach_edit``. The paper trains on the 30% of pairs with the largest edit distance:
``sort: {by: score_coach_edit, descending: true}`` then ``head: {fraction: 0.3}``, then ``sft`` names the
coach.

``coachlm`` revises every row with the coach (greedy), parses the pair back and post-processes it as the
paper does: characters outside Latin scripts dropped, a string repeated three or more times in a row
kept once, and a revision more than ``max_growth`` times the raw pair's length rejected. The revised
conversation replaces the row's; the raw one is kept in ``coach_raw``. A reply that does not parse or
is rejected leaves the row as it was, says why in ``error_coachlm`` and is counted.
"""

from __future__ import annotations

import re
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.lib.edit import edit_distance
from dataflywheel.models.base import CHAT, Sampling
from dataflywheel.models.constraint import Constraint, Part
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Mapper, OpParams
from dataflywheel.ops.llm import LLMParams, LLMTask, row_error
from dataflywheel.ops.parsing import fitted

_PAIR = re.compile(r"Instruction:\s*(?P<i>.+?)\s*Response:\s*(?P<r>.+)", re.DOTALL | re.IGNORECASE)
_FOREIGN = re.compile(r"[^\u0000-\u024F\u2000-\u206F\u20A0-\u20CF\u2100-\u214F\u2190-\u21FF\u2200-\u22FF]")
_REPEAT = re.compile(r"(.{8,}?)\1{2,}", re.DOTALL)


def pair_text(instruction: str, response: str) -> str:
    return f"Instruction: {instruction}\nResponse: {response}"


def parse_pair(text: str) -> tuple[str, str] | None:
    """(instruction, response) from "Instruction: ... Response: ...", or None."""
    m = _PAIR.search(text)
    if m is None:
        return None
    instruction, response = m.group("i").strip(), m.group("r").strip()
    return (instruction, response) if instruction and response else None


def post_process(text: str) -> str:
    """The paper's rule-based clean-up: non-Latin characters dropped, runs of a repeated string (8+
    characters, 3+ times) kept once, whitespace at the ends trimmed."""
    text = _FOREIGN.sub("", text)
    text = _REPEAT.sub(r"\1", text)
    return text.strip()


def _meta() -> str:
    return prompts.load(__file__, "coachlm_meta.txt").strip()


class CoachPairs(Mapper):
    """CoachLM's training rows from preference rows: meta-instruction + raw pair -> revised pair."""

    class Params(OpParams):
        pass

    reads = (S.PROMPT, S.CHOSEN, S.REJECTED)
    writes = (S.MESSAGES, "score_coach_edit")

    def map(self, batch: pa.Table) -> pa.Table:
        convs, scores = [], []
        for prompt, chosen, rejected in zip(
            batch.column(S.PROMPT).to_pylist(), batch.column(S.CHOSEN).to_pylist(),
            batch.column(S.REJECTED).to_pylist(), strict=True,
        ):  # fmt: skip
            instruction = S.prompt_text(prompt)
            raw = pair_text(instruction, rejected[-1]["content"])
            revised = pair_text(instruction, chosen[-1]["content"])
            convs.append(
                [
                    {"role": "user", "content": f"{_meta()}\n\n{raw}"},
                    {"role": "assistant", "content": revised},
                ]
            )
            scores.append(float(edit_distance(raw, revised)))
        batch = S.put_column(batch, S.MESSAGES, pa.array(convs, S.CONVERSATION_TYPE))
        return S.put_column(batch, "score_coach_edit", pa.array(scores, pa.float64()))


class CoachLM(LLMTask, Mapper):
    """CoachLM revision: every (instruction, response) pair rewritten by the coach, parsed back,
    post-processed; the raw conversation kept in ``coach_raw``."""

    class Params(LLMParams):
        max_tokens: int = Field(512, ge=1, description="tokens per revised pair at most")
        max_growth: float = Field(3.0, gt=1, description="reject a revision longer than this x the raw pair")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}
    reads = (S.MESSAGES,)
    writes = (S.MESSAGES, "coach_raw", "error_coachlm")
    batch_rows = 32

    def raw_pair(self, row: dict) -> tuple[str, str] | None:
        conv = row[S.MESSAGES] or []
        if not conv or conv[-1]["role"] != "assistant":
            return None
        instruction = S.prompt_text(conv)
        return instruction, conv[-1]["content"]

    def prompt(self, row: dict) -> list[dict] | None:
        raw = self.raw_pair(row)
        return None if raw is None else [{"role": "user", "content": f"{_meta()}\n\n{pair_text(*raw)}"}]

    def shape(self) -> Constraint:
        """ "Instruction: ..." then "Response: ...", the response given two thirds of the budget."""
        pieces = [
            Part(text="Instruction: "),
            (r"[^\n]", 1 / 3, 1),
            Part(text="\nResponse: "),
            (r"[\s\S]", 2 / 3, 1),
        ]
        return fitted(self.params.max_tokens, pieces)

    def parse(self, reply: str, row: dict) -> dict | None:
        got = parse_pair(post_process(reply))
        return None if got is None else {"instruction": got[0], "response": got[1]}

    def map(self, batch: pa.Table) -> pa.Table:
        p = self.params
        rows = batch.to_pylist()
        replies = self.ask(
            rows, self.shaped(Sampling(temperature=0.0, max_tokens=p.max_tokens), self.shape())
        )
        new, errors = [], []
        for row, asked in zip(rows, replies, strict=True):
            conv = row[S.MESSAGES]
            got = asked[0].values[0] if asked and asked[0].values else None
            error = None if got else row_error(asked)
            raw = self.raw_pair(row)
            grown = (
                got is not None and raw is not None and len(pair_text(got["instruction"], got["response"]))
            )
            if grown and grown > p.max_growth * len(pair_text(*raw)):
                got, error = None, "revision rejected: longer than max_growth x the raw pair"
                self.stats["too_long"] += 1
            if got is None:
                new.append(conv)
            else:
                system = [m for m in conv[:1] if m["role"] == "system"]
                new.append(
                    system
                    + [
                        {"role": "user", "content": got["instruction"]},
                        {"role": "assistant", "content": got["response"]},
                    ]
                )
                self.stats["revised"] += 1
            errors.append(error)
        batch = S.put_column(batch, "coach_raw", batch.column(S.MESSAGES))
        batch = S.put_column(batch, S.MESSAGES, pa.array(new, S.CONVERSATION_TYPE))
        return S.put_column(batch, "error_coachlm", pa.array(errors, pa.string()))
