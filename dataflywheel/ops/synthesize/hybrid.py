"""Cost-aware synthetic data (survey 3.5; Chan et al. 2024, "Balancing Cost and Effectiveness of Synthetic
Data Generation Strategies for LLMs").

Three ways to spend a teacher's query budget B on a seed set of S questions:

* answer augmentation: the teacher writes new answers (with their reasoning) to the seed questions:
  one query per row;
* question rephrase: the teacher rephrases a seed question, then answers the rephrasing: two per row;
* new question: the teacher writes a new question from a few seed questions, then answers it: two.

Which is best depends on the budget-to-seed ratio B/S: with little budget per seed, new answers to the
real questions are worth most; with plenty, new questions are (the paper's finding). ``strategy: auto``
picks by the ratio: answer augmentation below ``rephrase_from``, question rephrase below ``new_from``,
new questions from there on; those two thresholds are this project's defaults (the paper reports the
ordering, not cut-offs). The budget is ``queries_per_seed`` (B/S): each seed shard spends
``floor(B/S x its seeds)`` teacher queries, failed ones included. Every row names its strategy and its
seed question(s); a question or answer that does not come back is counted and makes no row.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.hashing import digest
from dataflywheel.models.base import CHAT, Sampling
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Generator, GeneratorParams
from dataflywheel.ops.llm import LLMParams, LLMTask, seed_texts, text_reply
from dataflywheel.ops.parsing import line_shape

Strategy = Literal["answer_augmentation", "question_rephrase", "new_question"]


def choose_strategy(ratio: float, rephrase_from: float, new_from: float) -> Strategy:
    """The strategy for a budget-to-seed ratio (see the module docstring)."""
    if ratio < rephrase_from:
        return "answer_augmentation"
    return "question_rephrase" if ratio < new_from else "new_question"


class HybridGenerate(LLMTask, Generator):
    """Chan et al.'s three generation strategies under one teacher-query budget, chosen from B/S."""

    class Params(GeneratorParams, LLMParams):
        queries_per_seed: float = Field(1.0, gt=0, description="teacher queries per seed question (B/S)")
        strategy: Literal["auto", "answer_augmentation", "question_rephrase", "new_question"] = Field(
            "auto", description="a strategy, or auto: chosen from queries_per_seed"
        )
        rephrase_from: float = Field(2.0, gt=0, description="auto: question rephrase from this B/S on")
        new_from: float = Field(8.0, gt=0, description="auto: new questions from this B/S on")
        examples: int = Field(3, ge=1, description="seed questions shown to write a new one")
        temperature: float = Field(0.7, ge=0, description="sampling temperature (new answers and questions)")
        max_tokens: int = Field(512, ge=1, description="tokens per question or answer at most")
        keep_seeds: bool = Field(False, description="the seed rows pass through too")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}
    reads = (S.MESSAGES,)
    writes = (S.MESSAGES, "hybrid_strategy", "prompt_version")

    @property
    def strategy(self) -> Strategy:
        p = self.params
        if p.strategy != "auto":
            return p.strategy
        return choose_strategy(p.queries_per_seed, p.rephrase_from, p.new_from)

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        p = self.params
        questions = []
        for sid, text in seed_texts(seeds):
            questions.append((sid, text))
        if not questions:
            return
        budget = math.floor(p.queries_per_seed * len(questions) + 1e-9)
        strategy = self.strategy
        self.stats[f"strategy_{strategy}"] += 1
        self.stats["teacher_budget"] += budget
        rng = random.Random(digest("hybrid", self.ctx.seed, [q for q, _ in questions]))
        seed = p.seed if p.seed is not None else self.ctx.seed
        sampling = Sampling(temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, seed=seed)
        version = digest(*(prompts.load(__file__, f"hybrid_{f}.txt") for f in ("answer", "rephrase", "new")))[
            :12
        ]
        rows = budget if strategy == "answer_augmentation" else budget // 2
        if strategy == "answer_augmentation":
            asked = [
                (questions[i % len(questions)][1], [questions[i % len(questions)][0]]) for i in range(rows)
            ]
        elif strategy == "question_rephrase":
            picks = [questions[i % len(questions)] for i in range(rows)]
            asked = self._questions(
                [self._fill("rephrase", question=q) for _, q in picks], [[s] for s, _ in picks], sampling
            )
        else:
            shown = [rng.sample(questions, min(p.examples, len(questions))) for _ in range(rows)]
            convs = [self._fill("new", examples="\n".join(f"- {q}" for _, q in ex)) for ex in shown]
            asked = self._questions(convs, [sorted(s for s, _ in ex) for ex in shown], sampling)
        self.stats["teacher_queries"] += rows if strategy == "answer_augmentation" else rows + len(asked)
        replies = self.sample_each([self._fill("answer", question=q) for q, _ in asked], text_reply, sampling)
        for (question, parents), reply in zip(asked, replies, strict=True):
            if not reply.values:
                self.stats["answer_missing"] += 1
                continue
            yield {
                S.MESSAGES: [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": reply.values[0]["text"]},
                ],
                "hybrid_strategy": strategy,
                "prompt_version": version,
                S.PARENTS: parents,
            }

    def _fill(self, name: str, **values: str) -> list[dict]:
        return [
            {"role": "user", "content": prompts.fill(prompts.load(__file__, f"hybrid_{name}.txt"), **values)}
        ]

    def _questions(
        self, convs: list[list[dict]], parents: list[list[str]], sampling: Sampling
    ) -> list[tuple[str, list[str]]]:
        out = []
        one_line = self.shaped(sampling, line_shape(self.params.max_tokens))  # "Write only the question"
        for reply, par in zip(self.sample_each(convs, text_reply, one_line), parents, strict=True):
            if reply.values:
                out.append((reply.values[0]["text"], par))
            else:
                self.stats["question_missing"] += 1
        return out
