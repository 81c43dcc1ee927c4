"""ROUGE-L between short texts, and a pool that answers "is this new text too close to any text so far?".

The Self-Instruct novelty filter compares every candidate instruction with every instruction already in
the pool (ROUGE-L F-measure, no stemming, > 0.7 means "not new"). The reference code runs
``rouge_score``'s dynamic-programming LCS against the whole pool for each candidate, which is quadratic in
the pool and dominates the pipeline at a few thousand instructions. Here the decision is the same (the
same tokens, the same LCS, the same floating-point formula) but most comparisons never happen:

* the LCS of two token sequences is at most their bag-of-words overlap (the sum over words of the smaller
  count), so a pooled text whose overlap with the candidate cannot reach the threshold is skipped; the
  overlaps with every pooled text come at once from an inverted index (word -> texts and counts);
* the LCS of the few that remain runs bit-parallel (Allison-Dix / Hyyro: one big-integer update per
  token of the other text instead of a row of the DP table).

``bench/rouge_novelty.py`` checks the decisions against ``rouge_score`` and measures the speed-up.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """Tokens as ``rouge_score``'s default tokenizer makes them without a stemmer: lower-cased ASCII
    letters and digits, everything else a separator."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def lcs_length(a: list, b: list) -> int:
    """Length of the longest common subsequence of two sequences (bit-parallel, O(len(b)) big-int ops)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        m = masks.get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def fmeasure(lcs: int, target_len: int, prediction_len: int) -> float:
    """ROUGE-L F from an LCS length, computed with ``rouge_score``'s exact floating-point steps."""
    if not target_len or not prediction_len:
        return 0.0
    precision, recall = lcs / prediction_len, lcs / target_len
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def rouge_l(target: str, prediction: str) -> float:
    """ROUGE-L F-measure of two texts (no stemming), equal to ``rouge_score``'s ``rougeL`` fmeasure."""
    t, p = rouge_tokens(target), rouge_tokens(prediction)
    return fmeasure(lcs_length(t, p), len(t), len(p))


@dataclass
class Nearest:
    """The closest pooled text to a candidate: its position in the pool and the ROUGE-L F-measure."""

    index: int | None
    score: float


class RougePool:
    """Texts added one by one; ``nearest`` finds the pooled text with the highest ROUGE-L to a candidate
    among those that could exceed ``threshold`` (exactly: none that is skipped could exceed it)."""

    def __init__(self, threshold: float = 0.7):
        self.threshold = threshold
        self.texts: list[str] = []
        self.tokens: list[list[str]] = []
        self._lengths: list[int] = []
        self._postings: dict[str, tuple[list[int], list[int]]] = {}  # word -> (text ids, counts)
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # frozen copies of long postings

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str, tokens: list[str] | None = None) -> int:
        toks = rouge_tokens(text) if tokens is None else tokens
        i = len(self.texts)
        self.texts.append(text)
        self.tokens.append(toks)
        self._lengths.append(len(toks))
        for word, count in Counter(toks).items():
            ids, counts = self._postings.setdefault(word, ([], []))
            ids.append(i)
            counts.append(count)
        return i

    def _posting(self, word: str) -> tuple[np.ndarray, np.ndarray] | None:
        lists = self._postings.get(word)
        if lists is None:
            return None
        cached = self._arrays.get(word)
        if cached is None or len(cached[0]) != len(lists[0]):
            cached = (np.asarray(lists[0], dtype=np.int64), np.asarray(lists[1], dtype=np.int32))
            self._arrays[word] = cached
        return cached

    def nearest(self, text: str, tokens: list[str] | None = None, exact: bool = False) -> Nearest:
        """The pooled text most similar to ``text``. By default only texts whose ROUGE-L could pass the
        threshold are compared (``Nearest(None, 0.0)`` when none could): enough to decide novelty.
        ``exact``: the true maximum over the whole pool (texts are compared in order of their bound until
        no bound can beat the best score so far)."""
        toks = rouge_tokens(text) if tokens is None else tokens
        n = len(toks)
        if not n or not self.texts:
            return Nearest(None, 0.0)
        overlap = np.zeros(len(self.texts), dtype=np.int32)
        for word, count in Counter(toks).items():
            posting = self._posting(word)
            if posting is not None:
                ids, counts = posting
                overlap[ids] += np.minimum(counts, count)
        lengths = np.asarray(self._lengths, dtype=np.float64)
        # F = 2 lcs / (m + n) and lcs <= overlap; a small margin keeps float rounding on the safe side.
        bound = 2.0 * overlap / (lengths + n)
        floor = 0.0 if exact else self.threshold - 1e-9
        candidates = np.flatnonzero(bound > floor)
        best = Nearest(None, 0.0)
        for i in candidates[np.argsort(-bound[candidates], kind="stable")]:
            if bound[i] <= best.score:
                break
            score = fmeasure(lcs_length(self.tokens[i], toks), self._lengths[i], n)
            if score > best.score:
                best = Nearest(int(i), score)
        return best

    def is_novel(self, text: str, tokens: list[str] | None = None) -> bool:
        return self.nearest(text, tokens).score <= self.threshold
