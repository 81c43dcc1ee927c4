"""The base of every op that writes prompts for a model and reads its replies (as distilabel's tasks do).

An LLM op writes two methods:

* ``prompt(row)``: the conversation to send for one row, a list of conversations (several asks per row:
  both orders of a pairwise judgement, one per turn), or None (nothing to ask for this row);
* ``parse(reply, row)``: what one reply says, as a dict of values, or None when it says nothing usable;
* optionally ``shape()``: the shape of the replies ``parse`` reads (structured generation), which the
  base asks the model to decode under (``constrained: auto|on|off``); the parser still checks every reply.

The base does everything else, once: sampling parameters (``temperature``, ``top_p``, ``max_tokens``,
``n``, ``seed``), the call through the recipe's model (cache, retries, tokens and cost live there), a
``raw_<name>`` column with every reply, ``error_<name>`` with why a row has no value (the request failed,
or no reply could be parsed), and the counts of requests, failures and unparsed replies in the step's
stats. An unparsed reply is never a default value: the row's outputs stay null and the count says so.

Ops that read a next-token distribution instead of a reply (expected scores over "1".."6") use
``ask_options``; kinds other than scorers (mappers, evaluators) call ``ask`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import CHAT, Conversation, Sampling
from dataflywheel.models.constraint import Constraint
from dataflywheel.ops.base import ModelRef, OpParams, Scorer

Constrained = Literal["auto", "on", "off"]


def ConstrainedField():
    return Field(
        "auto",
        description="decode replies under the shape the op reads (structured generation): auto where the "
        "model can enforce it, on = fail where it cannot, off = never; the parser checks every reply",
    )


class LLMParams(OpParams):
    """Sampling parameters every LLM op takes; an op's own Params subclass this and may change defaults."""

    model: str = ModelRef()
    temperature: float = Field(0.0, ge=0, description="0 = greedy (cached)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int = Field(256, ge=1, description="reply length in tokens at most")
    n: int = Field(1, ge=1, description="completions per prompt")
    seed: int | None = Field(None, description="sampling seed; the recipe's seed when unset")
    constrained: Constrained = ConstrainedField()


@dataclass
class Reply:
    """One prompt's answer: each completion's text and what ``parse`` read from it (None: unparsed)."""

    texts: list[str] = field(default_factory=list)
    parsed: list[dict | None] = field(default_factory=list)
    error: str | None = None  # the request failed after its retries
    finishes: list[str] = field(default_factory=list)  # each completion's finish reason (stop, length)
    # each completion's token log-probabilities, when the sampling asked for them (``logprobs=True``)
    logprobs: list[list[float] | None] = field(default_factory=list)

    def mean_nll(self, i: int = 0) -> float | None:
        """Completion i's mean negative log-probability per token (RobustFT's response "entropy"), or
        None when the backend returned no log-probabilities for it."""
        lps = self.logprobs[i] if i < len(self.logprobs) else None
        return -sum(lps) / len(lps) if lps else None

    @property
    def values(self) -> list[dict]:
        return [p for p in self.parsed if p is not None]


class LLMTask:
    """Mixin for any op kind: prompts out, parsed replies back, failures and unparsed replies counted."""

    model_param: ClassVar[str] = "model"  # the parameter naming the model to ask
    params: Any
    ctx: Any
    stats: Any

    def prompt(self, row: dict) -> Conversation | list[Conversation] | None:
        raise NotImplementedError

    def parse(self, reply: str, row: dict) -> dict | None:
        raise NotImplementedError

    def shape(self) -> Constraint | None:
        """The shape of the replies ``parse`` reads (a JSON schema, a choice, or parts that leave the
        reasoning free and fix what is read), asked of the model with every request; None: free text."""
        return None

    def shaped(self, sampling: Sampling, shape: Constraint | None) -> Sampling:
        """``sampling`` asking for ``shape`` as the op's ``constrained`` parameter says: auto sends it
        (a model that cannot enforce it gets the plain request, counted), on requires it, off drops it."""
        mode = getattr(self.params, "constrained", "auto")
        if shape is None or mode == "off":
            return sampling.model_copy(update={"constraint": None})
        return sampling.model_copy(update={"constraint": shape.model_copy(update={"required": mode == "on"})})

    def sampling(self) -> Sampling:
        p = self.params
        seed = p.seed if getattr(p, "seed", None) is not None else self.ctx.seed
        plain = Sampling(temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, n=p.n, seed=seed)
        return self.shaped(plain, self.shape())

    def retry_sampling(self, k: int, **update) -> Sampling:
        """The sampling of the k-th batch of an ask repeated until enough replies pass (k = 0 first): its
        seed moves on each time, since the same seeded request would be served the same sample again
        from the cache. Deterministic, so a resumed run asks the same."""
        s = self.sampling()
        return s.model_copy(update={"seed": (s.seed or 0) + 7919 * k, **update})

    def llm(self):
        return self.ctx.model(getattr(self.params, self.model_param))

    def _prompts(self, rows: list[dict]) -> tuple[list[Conversation], list[int]]:
        convs, owner = [], []
        for r, row in enumerate(rows):
            asked = self.prompt(row)
            if not asked:
                continue
            for conv in asked if isinstance(asked[0], list) else [asked]:
                convs.append(conv)
                owner.append(r)
        return convs, owner

    def ask(self, rows: list[dict], sampling: Sampling | None = None) -> list[list[Reply]]:
        """Every row's replies, one Reply per prompt it asked, in prompt order."""
        convs, owner = self._prompts(rows)
        out: list[list[Reply]] = [[] for _ in rows]
        replies = self.ask_conversations(
            convs, [lambda t, row=rows[r]: self.parse(t, row) for r in owner], sampling
        )
        for r, reply in zip(owner, replies, strict=True):
            out[r].append(reply)
        return out

    def ask_conversations(
        self, convs: list[Conversation], parse, sampling: Sampling | None = None, model: str | None = None
    ) -> list[Reply]:
        """One Reply per conversation, each completion read by ``parse(text)`` (one callable for all, or
        one per conversation): for ops that ask in several stages, each with its own prompts and reader.
        ``model`` asks another of the recipe's models than the op's own."""
        if not convs:
            return []
        llm = self.ctx.model(model) if model else self.llm()
        return self._read(llm.chat(convs, sampling or self.sampling()), parse)

    def ask_grouped(
        self, convs: list[Conversation], parse, samplings: list[Sampling], model: str | None = None
    ) -> list[Reply]:
        """As ``ask_conversations``, each conversation under its own sampling (one shape per kind of
        ask), asked in groups of equal sampling; replies in the conversations' order."""
        parsers = parse if isinstance(parse, list) else [parse] * len(convs)
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(samplings):
            groups.setdefault(s.model_dump_json(), []).append(i)
        out: list[Reply | None] = [None] * len(convs)
        for members in groups.values():
            replies = self.ask_conversations(
                [convs[i] for i in members], [parsers[i] for i in members], samplings[members[0]], model
            )
            for i, reply in zip(members, replies, strict=True):
                out[i] = reply
        return out

    def sample_each(self, convs: list[Conversation], parse, sampling: Sampling) -> list[Reply]:
        """One sampled reply per conversation, where the same conversation may come more than once: the
        copies are asked once with ``n`` = their count, so each gets its own sample (asking the same
        seeded request twice would get one sample twice, from the cache)."""
        groups: dict[str, list[int]] = {}
        for i, conv in enumerate(convs):
            groups.setdefault(orjson.dumps(conv, option=orjson.OPT_SORT_KEYS).decode(), []).append(i)
        by_n: dict[int, list[list[int]]] = {}
        for members in groups.values():
            by_n.setdefault(len(members), []).append(members)
        out: list[Reply | None] = [None] * len(convs)
        for n, member_lists in sorted(by_n.items()):
            replies = self.ask_conversations(
                [convs[m[0]] for m in member_lists], parse, sampling.model_copy(update={"n": n})
            )
            for members, reply in zip(member_lists, replies, strict=True):
                for j, i in enumerate(members):
                    if reply.error is not None:
                        out[i] = Reply(error=reply.error)
                    else:
                        k = min(j, len(reply.texts) - 1)
                        out[i] = Reply(
                            [reply.texts[k]],
                            [reply.parsed[k]],
                            finishes=[reply.finishes[k]],
                            logprobs=reply.logprobs[k : k + 1],
                        )
        return out

    def ask_texts(self, prompts: list[str], parse, sampling: Sampling | None = None) -> list[Reply]:
        """As ``ask_conversations``, for raw-text continuations (no chat template: the model's
        ``complete``)."""
        if not prompts:
            return []
        return self._read(self.llm().complete(prompts, sampling or self.sampling()), parse)

    def _read(self, results: list, parse) -> list[Reply]:
        parsers = parse if isinstance(parse, list) else [parse] * len(results)
        out = []
        for res, read in zip(results, parsers, strict=True):
            self.stats["requests"] += 1
            if res.error is not None:
                self.stats["failed"] += 1
                out.append(Reply(error=res.error))
                continue
            texts = [c.text for c in res.completions]
            parsed = [read(t) if t and t.strip() else None for t in texts]
            self.stats["replies"] += len(texts)
            self.stats["unparsed"] += sum(p is None for p in parsed)
            out.append(
                Reply(
                    texts,
                    parsed,
                    finishes=[c.finish_reason for c in res.completions],
                    logprobs=[c.logprobs for c in res.completions],
                )
            )
        return out

    def ask_options(self, rows: list[dict], options: list[str]) -> list[list[list[float]]]:
        """Every row's log-probabilities of answering each option next, one list per prompt it asked."""
        convs, owner = self._prompts(rows)
        out: list[list[list[float]]] = [[] for _ in rows]
        for r, lps in zip(owner, self.ask_options_of(convs, options), strict=True):
            out[r].append(lps)
        return out

    def ask_options_of(self, convs: list[Conversation], options: list[str]) -> list[list[float]]:
        """Each conversation's log-probabilities of answering each option next (ops asking in stages)."""
        if not convs:
            return []
        self.stats["requests"] += len(convs)
        return self.llm().option_logprobs(convs, options)


class LLMScorer(LLMTask, Scorer):
    """A scorer whose values come from parsed replies.

    ``value_columns`` maps each output column to its Arrow type; ``values(row, replies)`` turns a row's
    replies into those values (default: the first parsed reply's dict), or None when none could be read.
    The base adds ``error_<name>`` (null when the row has its values) and ``raw_<name>`` (every reply).
    """

    Params: ClassVar[type[OpParams]] = LLMParams
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}
    reads = (S.MESSAGES,)
    batch_rows = 32
    keep_raw: ClassVar[bool] = True

    @property
    def column_name(self) -> str:
        return getattr(self.params, "name", None) or self.name

    def value_columns(self) -> dict[str, pa.DataType]:
        raise NotImplementedError

    def output_columns(self) -> list[str]:
        extra = [f"error_{self.column_name}"] + ([f"raw_{self.column_name}"] if self.keep_raw else [])
        return [*self.value_columns(), *extra]

    def values(self, row: dict, replies: list[Reply]) -> dict | None:
        for reply in replies:
            if reply.values:
                return reply.values[0]
        return None

    def score(self, batch: pa.Table) -> dict:
        rows = batch.to_pylist()
        types = self.value_columns()
        out: dict[str, list] = {c: [] for c in types}
        errors, raws = [], []
        for row, replies in zip(rows, self.ask(rows), strict=True):
            got = self.values(row, replies) if replies else None
            for c in types:
                out[c].append(None if got is None else got.get(c))
            errors.append(None if got is not None else row_error(replies))
            raws.append([t for r in replies for t in r.texts])
        cols: dict[str, Any] = {c: pa.array(v, types[c]) for c, v in out.items()}
        cols[f"error_{self.column_name}"] = pa.array(errors, pa.string())
        if self.keep_raw:
            cols[f"raw_{self.column_name}"] = pa.array(raws, pa.list_(pa.string()))
        return cols


def row_error(replies: list[Reply]) -> str:
    """Why a row has no value: its first failed request, else its first unreadable reply."""
    if not replies:
        return "nothing to ask (no prompt for this row)"
    for r in replies:
        if r.error is not None:
            return f"request failed: {r.error}"
    first = next((t for r in replies for t in r.texts), "")
    return f"unparsed reply: {first[:200]!r}"


def text_reply(text: str) -> dict | None:
    """The reader of a free-text reply: its stripped text, or None (unparsed) when it is empty."""
    return {"text": text.strip()} if text.strip() else None


def seed_texts(seeds: pa.Table) -> list[tuple[str, str]]:
    """(id, first user turn) of every seed row that has a non-empty one: what generators start from."""
    if not seeds.num_rows:
        return []
    out = []
    for sid, conv in zip(seeds.column(S.ID).to_pylist(), seeds.column(S.MESSAGES).to_pylist(), strict=True):
        text = next((m["content"] for m in conv or [] if m["role"] == "user"), None)
        if text and text.strip():
            out.append((sid, text.strip()))
    return out


def seed_ids(seeds: pa.Table) -> list[str]:
    return seeds.column(S.ID).to_pylist() if seeds.num_rows else []
