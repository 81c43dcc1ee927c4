"""Evol-Instruct (WizardLM, Xu et al. 2023): instructions made harder and more varied, round by round.

Each round evolves every live instruction once, by a method drawn at random: one of the in-depth
evolutions (add a constraint, deepen the inquiry, concretize, ask for more reasoning steps, complicate
the input with data to work on) or in-breadth evolution (a new instruction in the same domain, on a rarer
topic). The evolved instruction is answered by the model, then eliminated when it fails one of the
paper's rules:

1. no information gain over its parent: the model judges the two "Equal" (the equality prompt), or the
   evolved text is the parent's text;
2. the answer shows the instruction is too hard for the model: it contains "sorry" and is short (fewer
   than ``sorry_max_words`` words);
3. the answer holds only punctuation and stop words;
4. the evolved instruction leaks the evolving template's words ("given prompt", "rewritten prompt", ...).

A survivor becomes the next round's parent and its (instruction, answer) pair an output row; after a
failure the parent itself evolves again in the next round (the paper puts it back in the pool). Every
row names the seed it descends from (``parents``), its round (``evol_round``), method (``evol_method``)
and the instruction it was evolved from (``evol_parent``). Replies that cannot be read (an empty rewrite,
a judgement other than Equal / Not Equal) are counted under their own names, never read as a pass.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import ClassVar, Literal, get_args

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.hashing import digest
from dataflywheel.models.base import CHAT, Sampling
from dataflywheel.models.constraint import Constraint
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Generator, GeneratorParams
from dataflywheel.ops.llm import LLMParams, LLMTask, seed_ids, seed_texts, text_reply

IN_DEPTH = {
    "constraints": "Add one more constraint or requirement to it.",
    "deepen": "If it asks about a certain issue, increase the depth and breadth of the inquiry.",
    "concretize": "Replace general concepts with more specific ones.",
    "reasoning": "If it can be solved with a few simple steps of thinking, rewrite it to ask explicitly for "
    "reasoning in several steps.",
    "complicate_input": "Add input data the task must work with (a short table, a piece of code, a formula "
    "or a list), written out in the prompt.",
}
METHODS = (*IN_DEPTH, "breadth")
Method = Literal["constraints", "deepen", "concretize", "reasoning", "complicate_input", "breadth"]
LEAKS = ("given prompt", "rewritten prompt", "harder prompt", "new prompt", "created prompt", "#rewritten")
STOP_WORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been it this that "
    "these those i you he she we they me him her us them my your his its our their not no yes so do does "
    "did".split()
)
_LABEL = re.compile(r"^\s*(?:(?:harder|new|rewritten) prompt\s*:\s*)", re.IGNORECASE)
_VERDICT = re.compile(r"^\W*(not\s+equal|equal)\b", re.IGNORECASE)
PROMPT_FILES = ("evol_in_depth.txt", "evol_in_breadth.txt", "evol_equal.txt")


class EvolInstruct(LLMTask, Generator):
    """Evol-Instruct: ``rounds`` of in-depth / in-breadth evolution of the seeds' instructions, with the
    paper's four elimination rules; every surviving evolution is a row (instruction + the model's answer).
    """

    class Params(GeneratorParams, LLMParams):
        rounds: int = Field(4, ge=1, description="evolution rounds (the paper: 4)")
        methods: list[Method] = Field(list(METHODS), min_length=1, description="evolutions to draw from")
        temperature: float = Field(1.0, ge=0, description="evolution sampling temperature")
        max_tokens: int = Field(512, ge=1, description="tokens per evolved instruction at most")
        response_max_tokens: int = Field(1024, ge=1, description="tokens per answer at most (greedy)")
        judge_equality: bool = Field(True, description="ask the model whether an evolution equals its parent")
        sorry_max_words: int = Field(80, ge=0, description="an answer with 'sorry' and fewer words fails")
        keep_seeds: bool = Field(False, description="the seed rows pass through too")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}
    reads = (S.MESSAGES,)
    writes = (S.MESSAGES, "evol_round", "evol_method", "evol_parent", "prompt_version")

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        p = self.params
        rng = random.Random(digest("evol_instruct", self.ctx.seed, seed_ids(seeds)))
        version = digest(*(prompts.load(__file__, f) for f in PROMPT_FILES))[:12]
        base_seed = p.seed if p.seed is not None else self.ctx.seed
        live = []  # (seed id, current instruction)
        for sid, text in seed_texts(seeds):
            live.append((sid, text))
        for r in range(1, p.rounds + 1):
            if not live:
                return
            methods = [rng.choice(p.methods) for _ in live]
            sampling = Sampling(
                temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, seed=base_seed + r
            )
            evolved = self._evolve([t for _, t in live], methods, sampling)
            answers = iter(self._answer([e for e, _ in evolved if e is not None]))
            outcome = [(e, why, next(answers) if e is not None else None) for e, why in evolved]
            asked = [(t, e) for (_, t), (e, _, a) in zip(live, outcome, strict=True) if a is not None]
            eq = iter(self._equal(asked))
            nxt = []
            for (sid, parent), method, (new, why, answer) in zip(live, methods, outcome, strict=True):
                if new is None:
                    failure = why
                elif answer is None:
                    failure = "unanswered"
                else:
                    failure = elimination(parent, new, answer, next(eq), p.sorry_max_words)
                if failure is not None:
                    self.stats[f"eliminated_{failure}"] += 1
                    nxt.append((sid, parent))
                    continue
                self.stats[f"evolved_{method}"] += 1
                nxt.append((sid, new))
                yield {
                    S.MESSAGES: [{"role": "user", "content": new}, {"role": "assistant", "content": answer}],
                    "evol_round": r,
                    "evol_method": method,
                    "evol_parent": parent,
                    "prompt_version": version,
                    S.PARENTS: [sid],
                }
            live = nxt

    def _evolve(
        self, instructions: list[str], methods: list[str], sampling: Sampling
    ) -> list[tuple[str | None, str | None]]:
        """Each instruction's evolution, or None and why there is none (failed, unreadable, cut off)."""
        convs = []
        for text, method in zip(instructions, methods, strict=True):
            if method == "breadth":
                body = prompts.fill(prompts.load(__file__, "evol_in_breadth.txt"), instruction=text)
            else:
                body = prompts.fill(
                    prompts.load(__file__, "evol_in_depth.txt"), method=IN_DEPTH[method], instruction=text
                )
            convs.append([{"role": "user", "content": body}])
        out: list[tuple[str | None, str | None]] = []
        for reply in self.ask_conversations(convs, _rewrite, sampling):
            if reply.error is not None:
                out.append((None, "request_failed"))
            elif not reply.values:
                out.append((None, "evolution_unread"))
            elif reply.finishes[0] == "length":
                out.append((None, "truncated"))
            else:
                out.append((reply.values[0]["text"], None))
        return out

    def _answer(self, instructions: list[str]) -> list[str | None]:
        sampling = Sampling(temperature=0.0, max_tokens=self.params.response_max_tokens)
        convs = [[{"role": "user", "content": t}] for t in instructions]
        replies = self.ask_conversations(convs, text_reply, sampling)
        return [r.values[0]["text"] if r.values else None for r in replies]

    def _equal(self, pairs: list[tuple[str, str]]) -> list[bool | None]:
        """Whether each evolution equals its parent: the same text is equal; else the model judges when
        ``judge_equality`` (an unreadable verdict is None and counted), else not equal."""
        out: list[bool | None] = [a.strip() == b.strip() for a, b in pairs]
        ask = (
            [i for i, (a, b) in enumerate(pairs) if a.strip() != b.strip()]
            if self.params.judge_equality
            else []
        )
        template = prompts.load(__file__, "evol_equal.txt")
        convs = [
            [{"role": "user", "content": prompts.fill(template, first=pairs[i][0], second=pairs[i][1])}]
            for i in ask
        ]
        self.stats["equality_judged"] += len(convs)
        verdict = self.shaped(
            Sampling(temperature=0.0, max_tokens=4), Constraint(choice=["Equal", "Not Equal"])
        )
        for i, reply in zip(ask, self.ask_conversations(convs, _verdict, verdict), strict=True):
            out[i] = reply.values[0]["equal"] if reply.values else None
            if not reply.values:
                self.stats["equality_unread"] += 1
        return out


def elimination(
    parent: str, evolved: str, answer: str, equal: bool | None, sorry_max_words: int
) -> str | None:
    """Which of the paper's elimination rules an evolution fails (a short name), or None if it passes.
    ``equal`` None (the equality verdict was unreadable) fails as unjudged: never read as a pass."""
    if equal is None:
        return "unjudged"
    if equal:
        return "no_information_gain"
    words = answer.split()
    if "sorry" in answer.lower() and len(words) < sorry_max_words:
        return "answer_sorry"
    tokens = re.findall(r"[a-z0-9']+", answer.lower())
    if all(t in STOP_WORDS for t in tokens):
        return "answer_stop_words_only"
    low = evolved.lower()
    if any(leak in low for leak in LEAKS) or ("#" in evolved and "prompt#" in low):
        return "template_leak"
    return None


def _rewrite(text: str) -> dict | None:
    text = _LABEL.sub("", text.strip()).strip()
    return {"text": text} if text else None


def _verdict(text: str) -> dict | None:
    m = _VERDICT.match(text)
    return None if m is None else {"equal": not m.group(1).lower().startswith("not")}


assert get_args(Method) == METHODS  # one list of methods
