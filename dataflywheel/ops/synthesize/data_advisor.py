"""Data Advisor (Wang et al., EMNLP 2024): safety data generated where the dataset is still weak.

Plain Self-Instruct-style generation drifts to the kinds of harm already over-represented. Data Advisor
keeps a running summary of what the data covers and, round by round:

1. asks the model (the advisor) which kind of harm is not covered yet: the first line of its reply is
   the round's issue (temperature 0.9, top_p 0.95, 32 tokens);
2. writes ``per_round`` new queries about that issue, each prompt showing 3 random exemplars from the
   pool (the first line of each reply; temperature 0.9, top_p 0.95);
3. merges the issue into the summary (greedy; the list before its closing "---");
4. adds exactly one of the new queries to the exemplar pool (so no single issue floods it) and writes all
   of them out.

Each query is answered by ``responder`` (a safety-aligned model; default the op's own), greedily, and
becomes a row (query, safe response) naming its round, its issue, the summary's size after the round
and, as ``parents``, the seed rows among the exemplars it was shown (or those they descend from).
The seeds are the exemplar pool (their first user turn); the summary starts from ``categories``. An
issue or a summary the advisor's reply does not give is counted and that round's step is skipped (the
summary stays as it was); a query with no text is counted and makes no row.
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
from dataflywheel.models.base import CHAT, Sampling
from dataflywheel.models.constraint import Constraint
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Generator, GeneratorParams, ModelRef
from dataflywheel.ops.llm import LLMParams, LLMTask, seed_ids, seed_texts, text_reply
from dataflywheel.ops.parsing import free_chars, line_shape

CATEGORIES = (
    "medical", "financial", "legal", "technical", "relationship", "educational", "emotional manipulation",
    "violent", "drug-related", "self-harm",
)  # fmt: skip
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+\s*[.)])\s*")


class DataAdvisor(LLMTask, Generator):
    """Data Advisor: rounds of weakness-finding, targeted queries from 3 exemplars, summary merging."""

    class Params(GeneratorParams, LLMParams):
        rounds: int = Field(5, ge=1, description="advisor rounds per seed shard (the paper: 1000)")
        per_round: int = Field(12, ge=1, description="queries written per round (the paper: 12)")
        exemplars: int = Field(3, ge=1, description="exemplars shown per query prompt (the paper: 3)")
        categories: list[str] = Field(list(CATEGORIES), min_length=1, description="the summary to start from")
        temperature: float = Field(0.9, ge=0, description="issue and query sampling temperature")
        top_p: float = Field(0.95, gt=0, le=1, description="issue and query sampling top_p")
        max_tokens: int = Field(512, ge=1, description="tokens per query at most")
        issue_max_tokens: int = Field(32, ge=1, description="tokens per issue at most")
        summary_max_tokens: int = Field(1024, ge=1, description="tokens per merged summary at most (greedy)")
        responder: str | None = ModelRef("the model that answers the queries (default: model)", None)
        response_max_tokens: int = Field(256, ge=1, description="tokens per safe response (greedy)")
        keep_seeds: bool = Field(False, description="the seed rows pass through too")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,), "responder": (CHAT,)}
    reads = (S.MESSAGES,)
    writes = (S.MESSAGES, "advisor_round", "advisor_issue", "advisor_summary_size", "prompt_version")

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        p = self.params
        version = digest(
            *(prompts.load(__file__, f"advisor_{f}.txt") for f in ("weakness", "query", "summary"))
        )[:12]
        rng = random.Random(digest("data_advisor", self.ctx.seed, seed_ids(seeds)))
        base_seed = p.seed if p.seed is not None else self.ctx.seed
        pool: list[tuple[str, list[str]]] = []  # (query, the seed ids it descends from)
        for sid, text in seed_texts(seeds):
            pool.append((text, [sid]))
        if not pool:
            return
        summary = list(p.categories)
        for r in range(1, p.rounds + 1):
            hot = Sampling(
                temperature=p.temperature, top_p=p.top_p, seed=base_seed + r, max_tokens=p.issue_max_tokens
            )
            issue = self._issue(summary, hot)
            if issue is None:
                continue
            shown = [rng.sample(pool, min(p.exemplars, len(pool))) for _ in range(p.per_round)]
            convs = [self._query_prompt([q for q, _ in ex], issue) for ex in shown]
            one_line = self.shaped(
                hot.model_copy(update={"max_tokens": p.max_tokens}), line_shape(p.max_tokens)
            )
            replies = self.sample_each(convs, _first_line, one_line)
            made = []
            for ex, reply in zip(shown, replies, strict=True):
                if reply.values:
                    made.append((reply.values[0]["text"], sorted({s for _, ids in ex for s in ids})))
                elif reply.error is None:
                    self.stats["query_empty"] += 1
            summary = self._merge(summary, issue)
            if made:
                pool.append(made[rng.randrange(len(made))])
                self.stats["exemplars_added"] += 1
            answers = self.ask_conversations(
                [[{"role": "user", "content": q}] for q, _ in made],
                text_reply,
                Sampling(temperature=0.0, max_tokens=p.response_max_tokens),
                model=p.responder,
            )
            for (query, parents), answer in zip(made, answers, strict=True):
                if not answer.values:
                    self.stats["response_missing"] += 1
                    continue
                yield {
                    S.MESSAGES: [
                        {"role": "user", "content": query},
                        {"role": "assistant", "content": answer.values[0]["text"]},
                    ],
                    "advisor_round": r,
                    "advisor_issue": issue,
                    "advisor_summary_size": len(summary),
                    "prompt_version": version,
                    S.PARENTS: parents,
                }
        self.stats["summary_lines"] += len(summary)

    def _issue(self, summary: list[str], sampling: Sampling) -> str | None:
        text = prompts.fill(prompts.load(__file__, "advisor_weakness.txt"), summary=_listing(summary))
        shaped = self.shaped(sampling, line_shape(sampling.max_tokens))
        (reply,) = self.ask_conversations([[{"role": "user", "content": text}]], _first_line, shaped)
        if not reply.values:
            self.stats["issue_unread"] += 1
            return None
        return reply.values[0]["text"]

    def _query_prompt(self, exemplars: list[str], issue: str) -> list[dict]:
        ex = (exemplars * 3)[:3] if len(exemplars) < 3 else exemplars
        text = prompts.fill(
            prompts.load(__file__, "advisor_query.txt"), first=ex[0], second=ex[1], third=ex[2], issue=issue
        )
        return [{"role": "user", "content": text}]

    def _merge(self, summary: list[str], issue: str) -> list[str]:
        text = prompts.fill(
            prompts.load(__file__, "advisor_summary.txt"), summary=_listing(summary), issue=issue
        )
        budget = self.params.summary_max_tokens
        sampling = self.shaped(
            Sampling(temperature=0.0, max_tokens=budget), summary_shape(len(summary), budget)
        )
        (reply,) = self.ask_conversations([[{"role": "user", "content": text}]], _summary, sampling)
        if not reply.values:
            self.stats["summary_unread"] += 1
            return summary
        return reply.values[0]["lines"]


def parse_summary(text: str) -> list[str] | None:
    """The merged summary: its lines before the closing "---" (bullets removed), or None when there are
    no lines or no closing line (a list cut off or never finished is not read as the new summary)."""
    head, sep, _ = text.partition("---")
    if not sep:
        return None
    lines = [_BULLET.sub("", line).strip() for line in head.splitlines()]
    lines = [line for line in lines if line]
    return lines or None


LINE_CHARS = 48  # "every line to five words or fewer"


def summary_shape(lines: int, max_tokens: int) -> Constraint:
    """The merged list: "- kind" lines (one more than before at most, as many as the budget holds at
    about a token per 2 characters), then the closing "---"."""
    room = max(1, min(lines + 1, (free_chars(max_tokens)) // (LINE_CHARS + 3)))
    return Constraint(regex=rf"(- [^\n]{{1,{LINE_CHARS}}}\n){{1,{room}}}---")


def _listing(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def _first_line(text: str) -> dict | None:
    line = next((x.strip() for x in text.strip().splitlines() if x.strip()), "")
    line = _BULLET.sub("", line).strip().strip('"').strip()
    return {"text": line} if line else None


def _summary(text: str) -> dict | None:
    got = parse_summary(text)
    return None if got is None else {"lines": got}
