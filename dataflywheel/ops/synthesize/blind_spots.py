"""Targeted blind-spot generation (survey 3.4, agent-in-the-loop, "Illuminating Blind Spots"): find where a
student fails, and have a teacher write new examples aimed at exactly that.

1. The student answers every seed question (greedy); a seed is a failure when the student's final answer
   (``extract``: the last number, the last line, or the text) differs from the reference (the seed's
   last assistant turn).
2. The failures are embedded (``embedder``) and clustered with k-means (``clusters``), so each cluster is
   one kind of mistake.
3. For each cluster the teacher writes ``per_cluster`` new questions, each prompt showing up to
   ``examples`` of the cluster's failed questions.
4. Verification: the teacher answers each new question greedily and once more by sampling; the question is
   kept, with the greedy answer, only when the two final answers agree (an unverifiable question is
   counted and dropped).

Rows name their cluster, its size and, as ``parents``, the failed seeds the teacher was shown. Retrain the
student on them (a loop: evaluate, target, add, train) to close the gap, as LLM2LLM does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.hashing import digest
from dataflywheel.lib.answers import final_answer
from dataflywheel.lib.diversity import kmeans
from dataflywheel.models.base import CHAT, EMBED, Sampling
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Generator, GeneratorParams, ModelRef
from dataflywheel.ops.llm import LLMParams, LLMTask, text_reply
from dataflywheel.ops.parsing import final_number_shape, line_shape


class BlindSpots(LLMTask, Generator):
    """New examples aimed at clusters of a student's failures, written and verified by a teacher."""

    class Params(GeneratorParams, LLMParams):
        model: str = ModelRef("the teacher that writes and answers the new questions")
        student: str = ModelRef("the model whose failures are targeted")
        embedder: str = ModelRef("the model that embeds failed questions for clustering")
        extract: Literal["last_number", "last_line", "text"] = Field(
            "last_number", description="what a student's answer must share with the reference"
        )
        clusters: int = Field(4, ge=1, description="k-means clusters of failures")
        per_cluster: int = Field(2, ge=1, description="new questions per cluster")
        examples: int = Field(3, ge=1, description="failed questions shown per prompt")
        temperature: float = Field(0.7, ge=0, description="sampling of new questions and the check answer")
        max_tokens: int = Field(256, ge=1, description="tokens per new question or answer at most")
        student_max_tokens: int = Field(256, ge=1, description="tokens per student answer at most")
        keep_seeds: bool = Field(False, description="the seed rows pass through too")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,), "student": (CHAT,), "embedder": (EMBED,)}
    reads = (S.MESSAGES,)
    writes = (S.MESSAGES, "blindspot_cluster", "blindspot_cluster_size", "prompt_version")

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        p = self.params
        items = []
        for sid, conv in zip(
            seeds.column(S.ID).to_pylist(), seeds.column(S.MESSAGES).to_pylist(), strict=True
        ):
            reference = S.last_turn(conv or [], "assistant")
            prompt = S.prompt_of(conv or [])
            if reference is None or not prompt:
                self.stats["seed_without_reference"] += 1
                continue
            items.append((sid, prompt, final_answer(reference, p.extract)))
        if not items:
            return
        # 1. the student's failures
        greedy = Sampling(temperature=0.0, max_tokens=p.student_max_tokens)
        answers = self.ask_conversations([c for _, c, _ in items], text_reply, greedy, model=p.student)
        failed = [
            (sid, conv) for (sid, conv, want), a in zip(items, answers, strict=True)
            if not a.values or final_answer(a.values[0]["text"], p.extract) != want
        ]  # fmt: skip
        self.stats["student_answered"] += len(items)
        self.stats["student_failures"] += len(failed)
        if not failed:
            return
        # 2. clusters of failures
        questions = [S.prompt_text(conv) for _, conv in failed]
        x = np.asarray(self.ctx.model(p.embedder).embed(questions), dtype=np.float32)
        seed = p.seed if p.seed is not None else self.ctx.seed
        labels, _ = kmeans(x, p.clusters, seed)
        groups: dict[int, list[int]] = {}
        for i, c in enumerate(labels.tolist()):
            groups.setdefault(int(c), []).append(i)
        self.stats["clusters"] += len(groups)
        # 3. new questions per cluster
        rng = random.Random(digest("blind_spots", seed, [sid for sid, _ in failed]))
        template = prompts.load(__file__, "blindspot_new.txt")
        version = digest(template)[:12]
        asks, owners = [], []
        for c, members in sorted(groups.items()):
            for _ in range(p.per_cluster):
                shown = sorted(rng.sample(members, min(p.examples, len(members))))
                listing = "\n\n".join(f"Question {k + 1}:\n{questions[i]}" for k, i in enumerate(shown))
                asks.append([{"role": "user", "content": prompts.fill(template, examples=listing)}])
                owners.append((c, shown))
        hot = Sampling(temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, seed=seed)
        asked = self.sample_each(asks, text_reply, self.shaped(hot, line_shape(p.max_tokens)))
        new = [(r.values[0]["text"] if r.values else None) for r in asked]
        self.stats["question_missing"] += sum(q is None for q in new)
        kept = [(q, owner) for q, owner in zip(new, owners, strict=True) if q is not None]
        # 4. verification: a greedy and a sampled answer must agree
        convs = [[{"role": "user", "content": q}] for q, _ in kept]
        # answers that end in what ``extract`` reads (a "#### n" line for the last number)
        answer_shape = final_number_shape(p.max_tokens) if p.extract == "last_number" else None
        greedy_answer = self.shaped(Sampling(temperature=0.0, max_tokens=p.max_tokens), answer_shape)
        first = self.ask_conversations(convs, text_reply, greedy_answer)
        second = self.ask_conversations(convs, text_reply, self.shaped(hot, answer_shape))
        for (q, (c, shown)), a, b in zip(kept, first, second, strict=True):
            if not a.values or not b.values:
                self.stats["answer_missing"] += 1
                continue
            fa = final_answer(a.values[0]["text"], p.extract)
            if fa is None or fa != final_answer(b.values[0]["text"], p.extract):
                self.stats["unverified"] += 1
                continue
            yield {
                S.MESSAGES: [
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": a.values[0]["text"]},
                ],
                "blindspot_cluster": c,
                "blindspot_cluster_size": len(groups[c]),
                "prompt_version": version,
                S.PARENTS: [failed[i][0] for i in shown],
            }
