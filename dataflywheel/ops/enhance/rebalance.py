"""Synthetic oversampling (Nakada, Xu, Li and Zhang, 2024): generate rows of the under-represented groups
of a column until every group is as large as the largest, and optionally ``augment`` more of every
group.

``oversample`` (a generator) counts the groups of ``column`` (a ``tag_*`` column, a label) in its seed
shard, and for each group asks the model for new texts conditioned on it: with ``examples`` > 0, that
many of the group's rows (drawn at random per request) are shown and the model writes one more of the
same group; with ``examples: 0`` the prompt names only the group, which is the paper's setting: a
generator fine-tuned on the rows with the group placed first, whose training conversations
``group_conditioned`` writes (the same prompt, answered by the row's text), e.g.

    # generator.yaml: train the generator on the imbalanced set
    steps:
      - group_conditioned: {column: tag_label}
      - sft: {model: base, output_model: generator}
    # then, in the recipe that rebalances, name its checkpoint as a model:
      - oversample: {model: generator, column: tag_label, examples: 0}

A generated text is the new row's user turn, with ``column`` set to its group; a reply that is empty,
was cut off at ``max_tokens``, or repeats a seed text or an earlier generated one is dropped and
counted by reason, and a group stops after ``max_attempts`` requests per needed row. Each new row names
as ``parents`` the rows it was shown (none for ``examples: 0``) and its group in ``oversample_group``.
Groups are counted per seed shard, so each shard is balanced on its own and so is their union (the
default shard holds 10,000 rows).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.hashing import digest
from dataflywheel.models.base import CHAT
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Generator, GeneratorParams, Mapper, OpParams
from dataflywheel.ops.llm import LLMParams, LLMTask

_LABEL = re.compile(r"^\s*(?:new\s+)?example(?:\s*\d+)?\s*:\s*", re.IGNORECASE)
_QUOTES = "\"'“”"


def condition_prompt(group: str, examples: list[str]) -> str:
    """What the generator is asked for one row of ``group``: shown ``examples`` of it, or its name only."""
    if not examples:
        return prompts.fill(prompts.load(__file__, "rebalance_group.txt"), group=group)
    shown = "\n\n".join(f"Example {i}:\n{t}" for i, t in enumerate(examples, 1))
    return prompts.fill(prompts.load(__file__, "rebalance_examples.txt"), group=group, examples=shown)


def parse_example(text: str) -> dict | None:
    """The example a reply writes: a leading "Example:" label and wrapping quotes removed; None when
    nothing is left or the reply writes several examples."""
    text = _LABEL.sub("", text.strip(), count=1).strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    if not text or re.search(r"^\s*example\s*\d+\s*:", text, re.IGNORECASE | re.MULTILINE):
        return None
    return {"text": text}


def _group_rows(seeds: pa.Table, column: str) -> tuple[dict[str, list[tuple[str, str]]], dict, int]:
    """Each group's (id, text) rows, each group's value as the column holds it, and how many rows have
    no group or no user text."""
    groups: dict[str, list[tuple[str, str]]] = {}
    values: dict = {}
    missing = 0
    if not seeds.num_rows:
        return groups, values, 0
    cols = [seeds.column(c).to_pylist() for c in (S.ID, S.MESSAGES, column)]
    for sid, conv, group in zip(*cols, strict=True):
        text = S.last_turn(conv or [], "user")
        if group is None or not (text and text.strip()):
            missing += 1
            continue
        groups.setdefault(str(group), []).append((sid, text.strip()))
        values[str(group)] = group
    return groups, values, missing


class GroupConditioned(Mapper):
    """The oversampling generator's training rows: each row's text as the answer to the prompt that names
    its group (the group placed first, as the paper fine-tunes its generator)."""

    class Params(OpParams):
        column: str = Field(description="the group column (a tag, a label)")

    reads = (S.MESSAGES,)
    writes = (S.MESSAGES,)

    def input_columns(self) -> list[str]:
        return [S.MESSAGES, self.params.column]

    def map(self, batch: pa.Table) -> pa.Table:
        convs = []
        for conv, group in zip(
            batch.column(S.MESSAGES).to_pylist(), batch.column(self.params.column).to_pylist(), strict=True
        ):
            text = S.last_turn(conv or [], "user")
            if group is None or not (text and text.strip()):
                convs.append(conv)  # nothing to condition on: the row stays as it was (counted)
                self.stats["unconditioned"] += 1
                continue
            convs.append(
                [
                    {"role": "user", "content": condition_prompt(str(group), [])},
                    {"role": "assistant", "content": text.strip()},
                ]
            )
        return S.put_column(batch, S.MESSAGES, pa.array(convs, S.CONVERSATION_TYPE))


class Oversample(LLMTask, Generator):
    """Synthetic oversampling: new rows for every group smaller than the largest, until balanced."""

    class Params(GeneratorParams, LLMParams):
        column: str = Field(description="the group column (a tag, a label)")
        examples: int = Field(
            5, ge=0, description="rows of the group shown per request (0: the group's name only)"
        )
        augment: int = Field(0, ge=0, description="rows to add to every group beyond the largest")
        temperature: float = Field(1.0, ge=0, description="sampling temperature")
        max_tokens: int = Field(256, ge=1, description="tokens per new row at most")
        max_attempts: float = Field(3.0, ge=1, description="requests per needed row at most, per group")
        batch: int = Field(16, ge=1, description="requests per model call")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}

    def input_columns(self) -> list[str]:
        return [S.MESSAGES, self.params.column]

    def output_columns(self) -> list[str]:
        return [S.MESSAGES, self.params.column, "oversample_group", "prompt_version"]

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        p = self.params
        groups, values, missing = _group_rows(seeds, p.column)
        self.stats["ungrouped"] += missing
        if not groups:
            return
        version = digest(*(prompts.load(__file__, f"rebalance_{f}.txt") for f in ("examples", "group")))[:12]
        rng = random.Random(digest("oversample", self.ctx.seed, [r[0] for g in groups.values() for r in g]))
        seen = {S.norm_text(t).lower() for rows in groups.values() for _, t in rows}
        target = max(len(rows) for rows in groups.values()) + p.augment
        self.stats["target"] = target
        for group in sorted(groups):
            rows = groups[group]
            need = target - len(rows)
            self.stats[f"needed:{group}"] = need
            attempts = tries = 0
            while need > 0 and attempts < p.max_attempts * (target - len(rows)):
                shown = [rng.sample(rows, min(p.examples, len(rows))) for _ in range(min(need, p.batch))]
                attempts += len(shown)
                sampling = self.retry_sampling(tries)
                tries += 1
                convs = [
                    [{"role": "user", "content": condition_prompt(group, [t for _, t in s])}] for s in shown
                ]
                for ex, reply in zip(shown, self.sample_each(convs, parse_example, sampling), strict=True):
                    if reply.error is not None:
                        continue  # counted as failed by the base
                    got = reply.values[0]["text"] if reply.values else None
                    if got is None:
                        continue  # counted as unparsed by the base
                    if reply.finishes and reply.finishes[0] == "length":
                        self.stats["cut_off"] += 1
                        continue
                    key = S.norm_text(got).lower()
                    if key in seen:
                        self.stats["duplicate"] += 1
                        continue
                    seen.add(key)
                    need -= 1
                    self.stats[f"made:{group}"] += 1
                    yield {
                        S.MESSAGES: [{"role": "user", "content": got}],
                        p.column: values[group],
                        "oversample_group": group,
                        "prompt_version": version,
                        S.PARENTS: sorted(sid for sid, _ in ex),
                    }
                    if need == 0:
                        break
            if need > 0:
                self.stats[f"short:{group}"] = need
