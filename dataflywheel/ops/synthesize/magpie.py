"""Magpie (Xu et al., ICLR 2025): alignment data from an aligned model's pre-query template alone.

An aligned chat model given only the text its chat template puts before a user's words (the pre-query
template: for Llama 3 ``<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n``) writes a
plausible user instruction, because it was trained on such sequences. The instruction is then answered
under the normal template. No seeds, no prompt engineering.

* The pre-query template is taken from the model's own chat template by rendering a sentinel user
  message and cutting at it (``models.template.pre_query``), so it holds for any template, a default
  system turn included (SmolLM2's); ``system`` replaces it with a task-steering system prompt.
* Instructions are sampled as raw-text continuations of it (temperature 1, top_p 1, as the paper), one
  request with ``n`` completions per batch of slots; sampling stops at the end of the user turn, and at
  the first newline by default (the paper's early stop: small models start answering after one).
* Responses come from the normal template, greedily (temperature 0).
* ``turns`` > 1 is the multi-turn extension: the pre-query of the next user turn is the conversation so
  far followed by the user header, and so on.

An instruction cut by the length limit, an empty one, or a failed request is counted in the step's stats
and makes no row. Tag the result with ``magpie_tag`` (input quality, difficulty, task category) and
remove repetitions with ``embed`` + ``diverse_filter`` (the paper treats a nearest neighbour within
distance 0.05 as a repetition: ``tau: 0.95``).

Magpie needs no seed content: each seed row is a slot for ``per_seed`` conversations (their parent is the
seed row), so the number of seed rows and ``budget.rows`` say how much is made.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.hashing import digest
from dataflywheel.models import template
from dataflywheel.models.base import CHAT, COMPLETE, Sampling
from dataflywheel.ops.base import Generator, GeneratorParams
from dataflywheel.ops.llm import LLMParams, LLMTask


class Magpie(LLMTask, Generator):
    """Magpie: instructions sampled from the pre-query template, answered under the normal template."""

    class Params(GeneratorParams, LLMParams):
        temperature: float = Field(1.0, ge=0, description="instruction sampling temperature (paper: 1.0)")
        top_p: float = Field(1.0, gt=0, le=1, description="instruction sampling top_p (paper: 1.0)")
        max_tokens: int = Field(2048, ge=1, description="tokens per instruction at most (paper: 2048)")
        response_max_tokens: int = Field(1024, ge=1, description="tokens per response at most (greedy)")
        per_seed: int = Field(1, ge=1, description="conversations made per seed row")
        turns: int = Field(1, ge=1, description="user turns per conversation (multi-turn extension)")
        system: str | None = Field(
            None, description="a task-steering system prompt (default: the template's)"
        )
        stop_at_newline: bool = Field(True, description="end an instruction at its first newline (paper)")
        pre_query: str | None = Field(
            None, description="the pre-query text itself, for a server whose tokenizer is not at hand"
        )
        tokenizer: str | None = Field(
            None, description="tokenizer whose chat template gives the pre-query (default: the model's)"
        )
        batch: int = Field(64, ge=1, description="instructions sampled per request (n completions)")
        keep_seeds: bool = Field(False, description="the seed rows pass through too")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT, COMPLETE)}
    reads = (S.ID,)
    writes = (S.MESSAGES, "prompt_version")

    def _template_tokenizer(self):
        if self.params.tokenizer:
            from dataflywheel.lib.tokens import load_tokenizer

            return load_tokenizer(self.params.tokenizer)
        tok = getattr(self.llm().backend, "tokenizer", None)
        if tok is None:
            raise ValueError(
                f"model '{self.params.model}' has no tokenizer at hand to build the pre-query template: "
                "give `tokenizer` (the model's tokenizer name) or `pre_query`"
            )
        return tok

    def pre_query(self, history: list[dict]) -> str:
        p = self.params
        system = [{"role": "system", "content": p.system}] if p.system else []
        if p.pre_query is not None and not history:
            return p.pre_query
        if getattr(self, "_tokenizer", None) is None:
            self._tokenizer = self._template_tokenizer()
        return template.pre_query(self._tokenizer, system + history)

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        p = self.params
        ids = seeds.column(S.ID).to_pylist() if seeds.num_rows else []
        slots = [sid for sid in ids for _ in range(p.per_seed)]
        base_seed = p.seed if p.seed is not None else self.ctx.seed
        version = digest("magpie", self.pre_query([]))[:12]
        stop = ["\n"] if p.stop_at_newline else None
        for start in range(0, len(slots), p.batch):
            chunk = slots[start : start + p.batch]
            convs: list[list[dict]] = [[] for _ in chunk]
            alive = list(range(len(chunk)))
            for turn in range(p.turns):
                seed = digest("magpie", base_seed, ids[0] if ids else "", start, turn)
                sampling = Sampling(
                    temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, stop=stop,
                    seed=int(seed[:8], 16),
                )  # fmt: skip
                got = self._instructions([convs[i] for i in alive], sampling, first=turn == 0)
                asked = [(i, text) for i, text in zip(alive, got, strict=True) if text is not None]
                for i, text in asked:
                    convs[i].append({"role": "user", "content": text})
                alive = [i for i, _ in asked]
                answers = self._responses([convs[i] for i in alive])
                still = []
                for i, answer in zip(alive, answers, strict=True):
                    if answer is None:
                        convs[i].pop()  # this turn has no answer: the conversation ends before it
                    else:
                        convs[i].append({"role": "assistant", "content": answer})
                        still.append(i)
                alive = still
            for i, sid in enumerate(chunk):
                if convs[i]:
                    yield {S.MESSAGES: convs[i], "prompt_version": version, S.PARENTS: [sid]}

    def _instructions(self, histories: list[list[dict]], sampling: Sampling, first: bool) -> list[str | None]:
        """One instruction per history (None when none came): the first turn asks once with n
        completions (all histories are empty), later turns once per conversation."""
        if not histories:
            return []
        if first:
            sampling = sampling.model_copy(update={"n": len(histories)})
            reply = self.ask_texts([self.pre_query([])], _instruction, sampling)[0]
            got = [self._keep(reply, j) for j in range(len(histories))] if reply.error is None else []
            return got + [None] * (len(histories) - len(got))
        replies = self.ask_texts([self.pre_query(h) for h in histories], _instruction, sampling)
        return [self._keep(r, 0) if r.error is None else None for r in replies]

    def _keep(self, reply, j: int) -> str | None:
        if j >= len(reply.texts) or reply.parsed[j] is None:
            self.stats["instruction_empty"] += 1
            return None
        if reply.finishes[j] == "length":
            self.stats["instruction_truncated"] += 1
            return None
        return reply.parsed[j]["text"]

    def _responses(self, convs: list[list[dict]]) -> list[str | None]:
        p = self.params
        system = [{"role": "system", "content": p.system}] if p.system else []
        sampling = Sampling(temperature=0.0, max_tokens=p.response_max_tokens)
        out = []
        for reply in self.ask_conversations([system + c for c in convs], _response, sampling):
            text = reply.values[0]["text"] if reply.values else None
            if text is None:
                self.stats["response_missing"] += 1
            out.append(text)
        return out


def _instruction(text: str) -> dict | None:
    text = text.strip()
    return {"text": text} if text else None


def _response(text: str) -> dict | None:
    text = text.strip()
    return {"text": text} if text else None
