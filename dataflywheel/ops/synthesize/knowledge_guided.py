"""Knowledge-guided generation (survey 3.3; the representative method is Condor, Cao et al., ACL 2025).

Instead of letting the model write whatever it likes, cover knowledge on purpose:

1. a knowledge tree: each seed row names a domain (its first user turn); the model lists ``topics``
   topics of it, then ``tags`` knowledge points (tags) of each topic;
2. questions: for each tag, ``questions_per_tag`` questions, each with a question style and a difficulty
   drawn at random from ``styles`` and ``difficulties``;
3. an answer to each question;
4. self-reflection refinement: the model reviews its answer (strengths, weaknesses, concrete
   improvements) and rewrites it from the review, ``refine_rounds`` times.

A row is the question with the refined answer, and names its domain, topic, tag, style and difficulty
(``kg_*`` columns), the first answer (``kg_draft``) and the last review (``kg_critique``). A review that
does not have its three parts, a list with no items, or an empty question or answer is counted under
its own name and makes nothing (no unreviewed answer is passed off as refined); ``keep_unrefined`` keeps
such questions with their draft answer and a null ``kg_critique`` instead. The tree's coverage is
in the step's stats: ``tree_tags`` (tags in the tree), ``tags_covered`` (tags with at least one row) and
``questions``; the ``kg_tag`` column gives questions per tag.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.hashing import digest
from dataflywheel.models.base import CHAT, Sampling
from dataflywheel.models.constraint import Constraint, Part
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Generator, GeneratorParams
from dataflywheel.ops.llm import LLMParams, LLMTask, seed_ids, seed_texts, text_reply
from dataflywheel.ops.parsing import fitted, line_shape

STYLES = (
    "a direct question",
    "a request for step-by-step help",
    "a short scenario that ends with a question",
    "a request to compare two things",
)
DIFFICULTIES = ("easy", "medium", "hard")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+\s*[.)]|[a-z]\s*[.)])\s*", re.IGNORECASE)
_PARTS = ("strengths", "weaknesses", "improvements")
_PART = re.compile(r"^\W*(strengths|weaknesses|improvements)\W*:", re.IGNORECASE | re.MULTILINE)


@dataclass
class _Item:
    seed: str
    domain: str
    topic: str
    tag: str
    style: str = ""
    difficulty: str = ""
    question: str | None = None
    draft: str | None = None
    answer: str | None = None
    critique: str | None = None


class KnowledgeGuided(LLMTask, Generator):
    """Condor-style knowledge-guided generation: tree, tagged questions, answers, self-reflection."""

    class Params(GeneratorParams, LLMParams):
        topics: int = Field(3, ge=1, description="topics per domain")
        tags: int = Field(3, ge=1, description="knowledge points (tags) per topic")
        questions_per_tag: int = Field(1, ge=1, description="questions per tag")
        styles: list[str] = Field(list(STYLES), min_length=1, description="question styles to draw from")
        difficulties: list[str] = Field(
            list(DIFFICULTIES), min_length=1, description="difficulties to draw from"
        )
        refine_rounds: int = Field(1, ge=1, description="review-and-rewrite rounds per answer")
        keep_unrefined: bool = Field(
            False, description="also keep a question whose review or rewrite failed, with its draft answer"
        )
        temperature: float = Field(
            0.7, ge=0, description="sampling temperature of the tree and the questions"
        )
        max_tokens: int = Field(256, ge=1, description="tokens per list or question at most")
        answer_max_tokens: int = Field(512, ge=1, description="tokens per answer, review or rewrite (greedy)")
        keep_seeds: bool = Field(False, description="the seed rows pass through too")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}
    reads = (S.MESSAGES,)
    writes = (
        S.MESSAGES, "kg_domain", "kg_topic", "kg_tag", "kg_style", "kg_difficulty", "kg_draft", "kg_critique",
        "prompt_version",
    )  # fmt: skip

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        p = self.params
        files = ("topics", "tags", "question", "critique", "refine")
        version = digest(*(prompts.load(__file__, f"condor_{f}.txt") for f in files))[:12]
        rng = random.Random(digest("knowledge_guided", self.ctx.seed, seed_ids(seeds)))
        seed = p.seed if p.seed is not None else self.ctx.seed
        hot = Sampling(temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, seed=seed)
        domains = []
        for sid, text in seed_texts(seeds):
            domains.append((sid, text))
        # 1. the tree: topics of each domain, then tags of each topic
        topic_lists = self._lists(
            [self._fill("topics", count=str(p.topics), domain=d) for _, d in domains],
            p.topics,
            self.shaped(hot, list_shape(p.topics, p.max_tokens)),
        )
        branches = [(sid, d, t) for (sid, d), ts in zip(domains, topic_lists, strict=True) for t in ts]
        tag_lists = self._lists(
            [self._fill("tags", count=str(p.tags), topic=t, domain=d) for _, d, t in branches],
            p.tags,
            self.shaped(hot, list_shape(p.tags, p.max_tokens)),
        )
        items = []
        for (sid, d, t), tags in zip(branches, tag_lists, strict=True):
            for tag in tags:
                for _ in range(p.questions_per_tag):
                    items.append(_Item(sid, d, t, tag, rng.choice(p.styles), rng.choice(p.difficulties)))
        self.stats["tree_topics"] += len(branches)
        self.stats["tree_tags"] += sum(len(t) for t in tag_lists)
        # 2. questions conditioned on tag, style and difficulty
        convs = [
            self._fill(
                "question", difficulty=i.difficulty, tag=i.tag, topic=i.topic, domain=i.domain, style=i.style
            )
            for i in items
        ]
        one_line = self.shaped(hot, line_shape(p.max_tokens))
        for item, reply in zip(items, self.sample_each(convs, text_reply, one_line), strict=True):
            item.question = reply.values[0]["text"] if reply.values else None
        items = self._keep(items, "question", "question_missing")
        # 3. answers, 4. review and rewrite
        greedy = Sampling(temperature=0.0, max_tokens=p.answer_max_tokens)
        convs = [[{"role": "user", "content": i.question}] for i in items]
        for item, reply in zip(items, self.ask_conversations(convs, text_reply, greedy), strict=True):
            item.draft = item.answer = reply.values[0]["text"] if reply.values else None
        items = self._keep(items, "answer", "answer_missing")
        for _ in range(p.refine_rounds):
            convs = [self._fill("critique", question=i.question, answer=i.answer) for i in items]
            reviewed = self.ask_conversations(
                convs, _review, self.shaped(greedy, review_shape(p.answer_max_tokens))
            )
            for item, reply in zip(items, reviewed, strict=True):
                item.critique = reply.values[0]["text"] if reply.values else None
            unrefined = [i for i in items if i.critique is None]
            items = self._keep(items, "critique", "critique_unread")
            convs = [
                self._fill("refine", question=i.question, answer=i.answer, critique=i.critique) for i in items
            ]
            for item, reply in zip(items, self.ask_conversations(convs, text_reply, greedy), strict=True):
                item.answer = reply.values[0]["text"] if reply.values else None
            unrefined += [i for i in items if i.answer is None]
            items = self._keep(items, "answer", "refined_answer_missing")
            if p.keep_unrefined:  # the draft stands, with no review: kg_critique stays null
                for i in unrefined:
                    i.answer, i.critique = i.draft, None
                self.stats["kept_unrefined"] += len(unrefined)
                items += unrefined
        covered = {(i.domain, i.topic, i.tag) for i in items}
        self.stats["tags_covered"] += len(covered)
        self.stats["questions"] += len(items)
        for i in items:
            yield {
                S.MESSAGES: [
                    {"role": "user", "content": i.question},
                    {"role": "assistant", "content": i.answer},
                ],
                "kg_domain": i.domain,
                "kg_topic": i.topic,
                "kg_tag": i.tag,
                "kg_style": i.style,
                "kg_difficulty": i.difficulty,
                "kg_draft": i.draft,
                "kg_critique": i.critique,
                "prompt_version": version,
                S.PARENTS: [i.seed],
            }

    def _fill(self, name: str, **values: str) -> list[dict]:
        return [
            {"role": "user", "content": prompts.fill(prompts.load(__file__, f"condor_{name}.txt"), **values)}
        ]

    def _lists(self, convs: list[list[dict]], count: int, sampling: Sampling) -> list[list[str]]:
        out = []
        for reply in self.ask_conversations(convs, _items, sampling):
            got = reply.values[0]["items"][:count] if reply.values else []
            if reply.error is None and not got:
                self.stats["list_unread"] += 1
            out.append(got)
        return out

    def _keep(self, items: list[_Item], field: str, reason: str) -> list[_Item]:
        kept = [i for i in items if getattr(i, field) is not None]
        self.stats[reason] += len(items) - len(kept)
        return kept


ITEM_TOKENS = 12  # "a few words each"


def list_shape(count: int, max_tokens: int) -> Constraint:
    """Exactly ``count`` lines of a few words, each starting with a letter (no numbering)."""
    share = min(ITEM_TOKENS / max(1, max_tokens), 1 / count)
    pieces: list = []
    for k in range(count):
        pieces += [Part(regex="[A-Za-z]"), (r"[^\n]", share, 0)] + (
            [Part(text="\n")] if k < count - 1 else []
        )
    return fitted(max_tokens, pieces)


def review_shape(max_tokens: int) -> Constraint:
    """The review's three parts, one line each, in order."""
    line = (r"[^\n]", 1 / 3, 1)
    pieces = [
        Part(text="Strengths: "),
        line,
        Part(text="\nWeaknesses: "),
        line,
        Part(text="\nImprovements: "),
        line,
    ]
    return fitted(max_tokens, pieces)


def parse_items(text: str) -> list[str]:
    """A reply's list items: one per non-empty line, bullets and numbering removed, duplicates dropped."""
    out: dict[str, None] = {}
    for line in text.splitlines():
        item = _BULLET.sub("", line).strip().strip("*").strip()
        if item and item.lower() not in {k.lower() for k in out}:
            out[item] = None
    return list(out)


def parse_review(text: str) -> str | None:
    """A review with its three parts (strengths, weaknesses, improvements), else None."""
    found = {m.group(1).lower() for m in _PART.finditer(text)}
    return text.strip() if found >= set(_PARTS) else None


def _items(text: str) -> dict | None:
    got = parse_items(text)
    return {"items": got} if got else None


def _review(text: str) -> dict | None:
    got = parse_review(text)
    return None if got is None else {"text": got}
