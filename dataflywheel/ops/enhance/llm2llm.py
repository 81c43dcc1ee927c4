"""LLM2LLM (Lee et al., Findings ACL 2024): grow a small training set where the student still fails.

One step of the paper's loop; put it in a recipe ``loop`` after the training step:

    - loop:
        iterations: 5
        steps:
          - sft: {model: base, output_model: student}        # from the base model, on the current set
          - llm2llm: {student: student, model: teacher}
          - eval_accuracy: {model: student, data: heldout.jsonl}

The student answers every *seed* row of the current set (rows with no ``parents``: the original data;
synthetic rows are never augmented, which keeps errors from compounding), greedily. A seed is wrong when
the student's final answer (the number after "####", else the last number) differs from the seed's
(``evaluate.tasks.gsm8k_correct``, as ``eval_accuracy`` checks). For
each wrong seed the teacher (temperature 1.0, the paper's) gets the paper's instruction (a system prompt
with the rules, one worked example exchange) and the seed's question and solution, and writes one new
problem "Question: ... Answer: ... #### n". A reply that does not parse, or whose question has a
banned word or starts with punctuation or a non-ASCII character, is counted and dropped. The output is
the current set plus the new rows (each naming its seed), so the next round trains on more.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.evaluate.tasks import gsm8k_correct
from dataflywheel.hashing import digest
from dataflywheel.models.base import CHAT, Sampling
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Generator, GeneratorParams, ModelRef
from dataflywheel.ops.llm import LLMParams, LLMTask, text_reply
from dataflywheel.ops.parsing import problem_shape

BANNED = (
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "draw",
    "drawing",
    "plot",
    "video",
    "audio",
)
_QA = re.compile(r"Question:\s*(?P<q>.+?)\s*Answer:\s*(?P<a>.+?####\s*(?P<n>-?[\d,]*\.?\d+))", re.DOTALL)
_BANNED = re.compile(r"\b(" + "|".join(BANNED) + r")\b", re.IGNORECASE)


def parse_problem(text: str) -> tuple[str, str] | None:
    """(question, answer with its "#### n") from a teacher's reply, or None when it is malformed or breaks
    the question rules (banned words, leading punctuation or non-ASCII)."""
    m = _QA.search(text)
    if m is None:
        return None
    question, answer = m.group("q").strip(), m.group("a").strip()
    if not question or _BANNED.search(question) or not question[0].isascii() or not question[0].isalnum():
        return None
    return question, answer


class LLM2LLM(LLMTask, Generator):
    """LLM2LLM: one new teacher-written problem for every seed the student gets wrong."""

    class Params(GeneratorParams, LLMParams):
        model: str = ModelRef("the teacher that writes new problems")
        student: str = ModelRef("the student (the model the previous step trained)")
        temperature: float = Field(1.0, ge=0, description="teacher sampling temperature (the paper: 1.0)")
        max_tokens: int = Field(512, ge=1, description="tokens per new problem at most")
        student_max_tokens: int = Field(512, ge=1, description="tokens per student answer at most")
        keep_seeds: bool = Field(True, description="the current set passes through (the set grows)")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,), "student": (CHAT,)}
    reads = (S.MESSAGES,)
    writes = (S.MESSAGES, "prompt_version")

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        p = self.params
        parents = (
            seeds.column(S.PARENTS).to_pylist() if S.PARENTS in seeds.column_names else [None] * len(seeds)
        )
        originals = []
        for sid, conv, made in zip(
            seeds.column(S.ID).to_pylist(), seeds.column(S.MESSAGES).to_pylist(), parents, strict=True
        ):
            reference = S.last_turn(conv or [], "assistant")
            if made or reference is None:  # synthetic rows are never augmented
                continue
            originals.append((sid, S.prompt_of(conv), reference))
        self.stats["seeds"] += len(originals)
        if not originals:
            return
        greedy = Sampling(temperature=0.0, max_tokens=p.student_max_tokens)
        answers = self.ask_conversations([c for _, c, _ in originals], text_reply, greedy, model=p.student)
        wrong = [
            (sid, conv, ref) for (sid, conv, ref), a in zip(originals, answers, strict=True)
            if not a.values or not gsm8k_correct(a.values[0]["text"], ref)
        ]  # fmt: skip
        self.stats["seeds_wrong"] += len(wrong)
        files = ("system", "example_user", "example_assistant", "user")
        text = {f: prompts.load(__file__, f"llm2llm_{f}.txt").strip() for f in files}
        version = digest(*text.values())[:12]
        convs = []
        for _, conv, ref in wrong:
            question = S.prompt_text(conv)
            convs.append(
                [
                    {"role": "system", "content": text["system"]},
                    {"role": "user", "content": text["example_user"]},
                    {"role": "assistant", "content": text["example_assistant"]},
                    {"role": "user", "content": prompts.fill(text["user"], question=question, answer=ref)},
                ]
            )
        seed = p.seed if p.seed is not None else self.ctx.seed
        hot = Sampling(
            temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, seed=seed + self.ctx.iteration
        )
        asked = self.ask_conversations(convs, _problem, self.shaped(hot, problem_shape(p.max_tokens)))
        for (sid, _, _), reply in zip(wrong, asked, strict=True):
            if not reply.values:
                self.stats["problem_unread"] += reply.error is None
                continue
            question, answer = reply.values[0]["question"], reply.values[0]["answer"]
            self.stats["problems_added"] += 1
            yield {
                S.MESSAGES: [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                "prompt_version": version,
                S.PARENTS: [sid],
            }


def _problem(text: str) -> dict | None:
    got = parse_problem(text)
    return None if got is None else {"question": got[0], "answer": got[1]}
