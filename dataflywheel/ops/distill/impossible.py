"""Impossible Distillation (Jung et al., NAACL 2024): paraphrase pairs from a small LM's own continuations.

Continuations sampled from the same context often say the same thing ("paraphrastic proximity"); the
strict critics keep the pairs that do. Two generators, in recipe order:

``impossible_pairs`` (stage 0)
    For every context (a row's text) the teacher samples ``samples`` continuations (raw completion,
    temperature 0.5, top-p 0.9, stopped at a line break), each cut to its first sentence (3+ characters,
    terminal punctuation). All pairs of candidates then pass the paper's filters in its order: length
    ratio (0.8 <= |b| / |a| <= 1.5, characters), entailment a => b and b => a (each >= 0.75), numbers
    equal, ROUGE-L <= 0.75, then duplicates removed (pairs whose sources, then whose targets, entail each
    other form connected components; the pair with the strongest mutual entailment kept). Each surviving pair
    is a paraphrasing row: the source as the request, the other as the answer.
``impossible_refine`` (stage >= 1, self-distillation)
    The trained student samples ``samples`` paraphrases of each row's source (temperature 0.7, top-p
    0.9); the same filters against the source; the surviving paraphrase with the lowest ROUGE-L (the most
    diverse) makes the new row.

The entailment critic is pluggable: by default an LLM of the recipe answers "Does the first sentence
imply the second? Yes or No" and the critic reads P(Yes) from its next-token distribution (renormalised
over the two answers); ``nli_model`` instead names any sequence-classification NLI checkpoint (the paper
used roberta-large-wanli), whose entailment probability is read.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.hashing import digest
from dataflywheel.lib.rouge import rouge_l
from dataflywheel.models.base import CHAT, COMPLETE, Sampling
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Generator, GeneratorParams, ModelRef
from dataflywheel.ops.llm import LLMTask, text_reply

SOURCE = "impossible_source"
_SENTENCE = re.compile(r"^(.+?[.!?][\"')\]]*)(?=\s|$)", re.DOTALL)

# ------------------------------------------------------------------ the filters, each alone


def first_sentence(text: str) -> str | None:
    """The first sentence of a continuation's first non-empty line (the reference bans the line-break
    token while sampling; here leading line breaks are skipped and the rest of the text cut at the next
    one), or None when there is none worth keeping: at least 3 characters and ending in terminal
    punctuation (the reference's conditions)."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")  # the reference bans line breaks
    text = " ".join(line.split())
    m = _SENTENCE.match(text)
    if m is None:
        return None
    sentence = m.group(1).strip()
    return sentence if len(sentence) >= 3 else None


def length_ok(a: str, b: str, low: float = 0.8, high: float = 1.5) -> bool:
    """The paraphrase length constraint, in characters: low * |a| <= |b| <= high * |a|."""
    return low * len(a) <= len(b) <= high * len(a)


_UNITS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen".split()
    )
}
_TENS = {
    w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())
}
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_NUMBER_TOKEN = re.compile(r"\d[\d,]*(?:\.\d+)?|[a-z]+")


def numbers(text: str) -> set[str]:
    """The numbers a text states, spelled-out ones numerised ("twenty-five" and "25" are both 25;
    "1,000" and "one thousand" both 1000; "3.50" is 3.5)."""
    out: set[str] = set()
    current: float | None = None
    total = 0.0

    def flush():
        nonlocal current, total
        if current is not None:
            value = total + current
            out.add(str(int(value)) if float(value).is_integer() else str(value))
        current, total = None, 0.0

    for tok in _NUMBER_TOKEN.findall(text.lower().replace("-", " ")):
        if tok[0].isdigit():
            flush()
            value = float(tok.replace(",", ""))
            out.add(str(int(value)) if value.is_integer() else str(value))
        elif tok in _UNITS or tok in _TENS:
            current = (current or 0) + (_UNITS.get(tok) or _TENS.get(tok) or 0)
        elif tok in _SCALES and current is not None:
            if _SCALES[tok] == 100:
                current *= 100
            else:
                total += current * _SCALES[tok]
                current = 0
        elif tok == "and" and current is not None:
            continue
        else:
            flush()
    flush()
    return out


def numbers_match(a: str, b: str) -> bool:
    """Both sentences state the same numbers (compared both ways, after numerisation)."""
    return numbers(a) == numbers(b)


def components(n: int, edges: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components of an undirected graph on nodes 0..n-1 (union-find), each sorted."""
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values())


@dataclass
class Pair:
    source: str
    target: str
    nli: float = 0.0  # P(source entails target)
    reverse_nli: float = 0.0  # P(target entails source)
    rouge: float = 0.0

    @property
    def mutual(self) -> float:
        return min(self.nli, self.reverse_nli)


Entail = Callable[[list[str], list[str]], list[float | None]]


class Filters:
    """The paper's critics with one entailment scorer ``entail(premises, hypotheses)`` (None: the critic
    could not score that pair; it is dropped and counted). ``counts`` says how many pairs each filter
    removed."""

    def __init__(self, entail: Entail, threshold: float = 0.75, rouge_max: float = 0.75,
                 low: float = 0.8, high: float = 1.5):  # fmt: skip
        self.entail, self.threshold, self.rouge_max = entail, threshold, rouge_max
        self.low, self.high = low, high
        self.counts: dict[str, int] = {}

    def _drop(self, name: str, n: int) -> None:
        if n:
            self.counts[name] = self.counts.get(name, 0) + n

    def _entailment(self, pairs: list[Pair], reverse: bool) -> list[Pair]:
        if not pairs:
            return []
        prem = [p.target if reverse else p.source for p in pairs]
        hyp = [p.source if reverse else p.target for p in pairs]
        kept = []
        for p, score in zip(pairs, self.entail(prem, hyp), strict=True):
            if score is None:
                self._drop("entailment unscored", 1)
                continue
            if reverse:
                p.reverse_nli = score
            else:
                p.nli = score
            if score >= self.threshold:
                kept.append(p)
            else:
                self._drop("reverse entailment" if reverse else "entailment", 1)
        return kept

    def _tail(self, pairs: list[Pair]) -> list[Pair]:
        """Numbers, then ROUGE-L."""
        kept = [p for p in pairs if numbers_match(p.source, p.target)]
        self._drop("numbers", len(pairs) - len(kept))
        for p in kept:
            p.rouge = rouge_l(p.source, p.target)
        out = [p for p in kept if p.rouge <= self.rouge_max]
        self._drop("rouge-l", len(kept) - len(out))
        return out

    def dedup(self, pairs: list[Pair], side: str) -> list[Pair]:
        """One pair per group of pairs whose ``side`` texts entail each other (P >= 0.5 either way is an
        edge, connected components are the groups): the one with the strongest mutual entailment."""
        texts = sorted({getattr(p, side) for p in pairs})
        if len(texts) < 2:
            return pairs
        index = {t: i for i, t in enumerate(texts)}
        order = list(itertools.permutations(range(len(texts)), 2))
        scores = self.entail([texts[a] for a, _ in order], [texts[b] for _, b in order])
        edges = [ab for ab, s in zip(order, scores, strict=True) if s is not None and s >= 0.5]
        out = []
        for group in components(len(texts), edges):
            members = [p for p in pairs if index[getattr(p, side)] in group]
            out.append(max(members, key=lambda p: (p.mutual, p.nli, -p.rouge)))
        self._drop(f"duplicate {side}", len(pairs) - len(out))
        return out

    def bootstrap(self, candidates: Sequence[str]) -> list[Pair]:
        """Stage 0: every pair of distinct candidates through length, entailment both ways, numbers,
        ROUGE-L and the duplicate removal. The reference removes duplicates before the last two; here the
        per-pair filters come first, so the pair kept for a group of duplicates is one that passes them
        (otherwise a group can lose every pair to its representative's ROUGE-L)."""
        unique = list(dict.fromkeys(candidates))
        self._drop("identical candidates", len(candidates) - len(unique))
        pairs = [Pair(a, b) for a, b in itertools.permutations(unique, 2)]
        kept = [p for p in pairs if length_ok(p.source, p.target, self.low, self.high)]
        self._drop("length", len(pairs) - len(kept))
        kept = self._entailment(kept, reverse=False)
        kept = self._tail(self._entailment(kept, reverse=True))
        return self.dedup(self.dedup(kept, "source"), "target")

    def refine(self, source: str, candidates: Sequence[str]) -> Pair | None:
        """Stage >= 1: the candidates against their source through the same filters; the survivor with
        the lowest ROUGE-L, or None."""
        pairs = [Pair(source, c) for c in dict.fromkeys(candidates) if c != source]
        kept = [p for p in pairs if length_ok(p.source, p.target, self.low, self.high)]
        self._drop("length", len(pairs) - len(kept))
        kept = self._tail(self._entailment(self._entailment(kept, reverse=False), reverse=True))
        return min(kept, key=lambda p: p.rouge) if kept else None


# ------------------------------------------------------------------ critics


class NLIModel:
    """Entailment probabilities from a sequence-classification NLI checkpoint (premise, hypothesis)."""

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 64):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        labels = {i: str(v).lower() for i, v in self.model.config.id2label.items()}
        found = [i for i, v in labels.items() if v.startswith("entail")]
        if not found:
            raise ValueError(f"{path}: no entailment label among {sorted(labels.values())}")
        self.index, self.device, self.batch_size, self._torch = found[0], device, batch_size, torch

    def __call__(self, premises: list[str], hypotheses: list[str]) -> list[float | None]:
        out: list[float | None] = []
        for at in range(0, len(premises), self.batch_size):
            enc = self.tok(
                premises[at : at + self.batch_size], hypotheses[at : at + self.batch_size],
                truncation=True, padding=True, return_tensors="pt",
            ).to(self.device)  # fmt: skip
            with self._torch.no_grad():
                probs = self._torch.softmax(self.model(**enc).logits.float(), -1)[:, self.index]
            out.extend(probs.tolist())
        return out


def llm_entailment(task: LLMTask, model: str) -> Entail:
    """Entailment read from an LLM: P(Yes) over {Yes, No} as the next token after the question."""
    template = prompts.load(__file__, "impossible_entail.txt")

    def entail(premises: list[str], hypotheses: list[str]) -> list[float | None]:
        convs = [
            [{"role": "user", "content": prompts.fill(template, premise=p, hypothesis=h)}]
            for p, h in zip(premises, hypotheses, strict=True)
        ]
        task.stats["entailment_requests"] += len(convs)
        scores: list[float | None] = []
        for lps in task.ctx.model(model).option_logprobs(convs, ["Yes", "No"]):
            yes, no = lps
            if not (np.isfinite(yes) or np.isfinite(no)):
                scores.append(None)
                continue
            top = max(yes, no)
            scores.append(float(np.exp(yes - top) / (np.exp(yes - top) + np.exp(no - top))))
        return scores

    return entail


# ------------------------------------------------------------------ the generators


class ImpossibleParams(GeneratorParams):
    model: str = ModelRef(description="the model that samples (stage 0: the teacher; refine: the student)")
    critic: str | None = ModelRef(description="the LLM that judges entailment (default: model)", default=None)
    nli_model: str | None = Field(None, description="a sequence-classification NLI checkpoint instead")
    samples: int = Field(20, ge=2, description="continuations per context (the paper: 100)")
    temperature: float = Field(0.5, ge=0, description="sampling temperature (the paper: 0.5; refine 0.7)")
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int = Field(100, ge=4, description="tokens per continuation at most")
    entailment: float = Field(0.75, ge=0, le=1, description="P(entail) needed in each direction")
    rouge_max: float = Field(0.75, ge=0, le=1, description="ROUGE-L above this is too close to paraphrase")
    min_ratio: float = Field(0.8, gt=0, description="target length / source length at least (characters)")
    max_ratio: float = Field(1.5, gt=0, description="target length / source length at most")
    column: str | None = Field(None, description="the context: a string column, else the last user turn")
    seed: int | None = Field(None, description="sampling seed; the recipe's seed when unset")


class _Impossible(LLMTask, Generator):
    Params: ClassVar = ImpossibleParams
    reads = (S.MESSAGES,)
    writes = (S.MESSAGES, SOURCE, "impossible_nli", "impossible_reverse_nli", "impossible_rouge_l")

    def input_columns(self) -> list[str]:
        return [S.ID, S.MESSAGES if self.params.column is None else self.params.column]

    def model_needs(self) -> dict[str, tuple[str, ...]]:
        needs = dict(self.needs)
        if self.params.critic is None and self.params.nli_model is None:  # the model judges too
            needs["model"] = tuple(dict.fromkeys((*needs["model"], *needs["critic"])))
        return needs

    def filters(self) -> Filters:
        p = self.params
        if p.nli_model:
            if getattr(self, "_nli", None) is None:
                self._nli = NLIModel(self.ctx.path(p.nli_model))
            entail = self._nli
        else:
            entail = llm_entailment(self, p.critic or p.model)
        return Filters(entail, p.entailment, p.rouge_max, p.min_ratio, p.max_ratio)

    def texts(self, seeds: pa.Table) -> list[tuple[str, str]]:
        col = self.params.column
        out = []
        for row in seeds.select(self.input_columns()).to_pylist():
            text = S.last_turn(row[S.MESSAGES] or [], "user") if col is None else row.get(col)
            if isinstance(text, str) and text.strip():
                out.append((row[S.ID], text.strip()))
            else:
                self.stats["no_text"] += 1
        return out

    def sampling_for(self, sid: str) -> Sampling:
        p = self.params
        seed = int(digest(self.name, p.seed if p.seed is not None else self.ctx.seed, sid)[:8], 16)
        return Sampling(temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, n=p.samples,
                        seed=seed)  # fmt: skip

    def record(self, filters: Filters) -> None:
        for name, n in filters.counts.items():
            self.stats[f"dropped: {name}"] += n

    def row(self, pair: Pair, sid: str) -> dict:
        request = prompts.fill(prompts.load(__file__, "impossible_task.txt").strip(), sentence=pair.source)
        return {
            S.MESSAGES: [{"role": "user", "content": request}, {"role": "assistant", "content": pair.target}],
            S.PARENTS: [sid],
            SOURCE: pair.source,
            "impossible_nli": pair.nli,
            "impossible_reverse_nli": pair.reverse_nli,
            "impossible_rouge_l": pair.rouge,
        }


class ImpossiblePairs(_Impossible):
    """Impossible Distillation, stage 0: paraphrase pairs filtered from the teacher's continuations of
    each context (see the module). Each row names its context as parent; ``impossible_source`` holds the
    source sentence and the scores of the critics stay on the row."""

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (COMPLETE,), "critic": (CHAT,)}

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        contexts = self.texts(seeds)
        replies = self.llm().complete(
            [text for _, text in contexts], self.sampling_for(contexts[0][0] if contexts else "")
        ) if contexts else []  # fmt: skip
        filters = self.filters()
        for (sid, _), res in zip(contexts, replies, strict=True):
            if res.error is not None:
                self.stats["failed"] += 1
                continue
            candidates = [s for s in (first_sentence(c.text) for c in res.completions) if s]
            self.stats["candidates"] += len(candidates)
            self.stats["no_sentence"] += len(res.completions) - len(candidates)
            for pair in filters.bootstrap(candidates):
                self.stats["pairs"] += 1
                yield self.row(pair, sid)
        self.record(filters)


class ImpossibleRefine(_Impossible):
    """Impossible Distillation, self-distillation: the student samples paraphrases of each row's source
    (``impossible_source``, else ``column`` or the last user turn); the survivor of the filters with the
    lowest ROUGE-L makes the new row (the source and its parent named)."""

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,), "critic": (CHAT,)}

    class Params(ImpossibleParams):
        samples: int = Field(10, ge=1, description="paraphrases sampled per source (the paper: 10)")
        temperature: float = Field(0.7, ge=0, description="sampling temperature (the paper: 0.7)")

    def texts(self, seeds: pa.Table) -> list[tuple[str, str]]:
        if SOURCE in seeds.column_names and self.params.column is None:
            out = []
            for sid, src in zip(
                seeds.column(S.ID).to_pylist(), seeds.column(SOURCE).to_pylist(), strict=True
            ):
                if src:
                    out.append((sid, src))
                else:
                    self.stats["no_text"] += 1
            return out
        return super().texts(seeds)

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        sources = self.texts(seeds)
        template = prompts.load(__file__, "impossible_task.txt").strip()
        convs = [[{"role": "user", "content": prompts.fill(template, sentence=s)}] for _, s in sources]
        replies = (
            self.ask_conversations(convs, text_reply, self.sampling_for(sources[0][0])) if sources else []
        )
        filters = self.filters()
        for (sid, source), reply in zip(sources, replies, strict=True):
            if reply.error is not None:
                self.stats["failed"] += 1
                continue
            candidates = [s for s in (first_sentence(v["text"]) for v in reply.values) if s]
            self.stats["candidates"] += len(candidates)
            pair = filters.refine(source, candidates)
            if pair is None:
                self.stats["no_survivor"] += 1
                continue
            self.stats["pairs"] += 1
            yield self.row(pair, sid)
        self.record(filters)
