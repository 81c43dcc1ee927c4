"""LLMLingua-2 (Pan et al., Findings ACL 2024): prompt compression as token classification.

Three parts, each usable alone:

* **Labels from a teacher's compressions.** ``align_words`` marks which words of an original text a
  compressed version kept, with the reference's greedy windowed matcher, and measures the two quality
  signals the paper filters on (variation rate: compressed words not in the original; alignment gap:
  hitting rate minus matching rate). ``drop_top`` is the filter: the top share of a signal goes.
* **The classifier.** ``train_classifier`` tunes any BERT-style encoder (MiniLM ships offline) as a
  2-label token classifier, each word's label on all its sub-tokens, with transformers' ``Trainer``.
* **Compression.** ``Compressor`` scores every word (the mean keep-probability of its sub-tokens),
  takes the threshold at the ``rate`` percentile of the target tokens and keeps the words above it in
  their original order, with forced words always kept. The thresholding is ``llmlingua``'s
  (``compress_prompt_llmlingua2``) so a classifier loaded in both keeps the same words; unlike it, the
  output keeps the original text's casing and line breaks (it cuts the original, not detokenized
  sub-tokens).

Words are runs of letters and digits, or single other non-space characters: what a BERT pre-tokenizer
splits on English text, so labels, training and inference all count the same words.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_WORD = re.compile(r"[^\W_]+|[^\w\s]|_")
SENTENCE_ENDS = frozenset({".", "!", "?"})


def word_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _WORD.finditer(text)]


def split_words(text: str) -> list[str]:
    return _WORD.findall(text)


# ------------------------------------------------------------------ labels from a teacher


@dataclass
class Alignment:
    """Which original words a compression kept, and how faithful the compression was."""

    labels: list[bool]
    found: int  # compressed words that occur anywhere in the original
    compressed_words: int

    @property
    def original_words(self) -> int:
        return len(self.labels)

    @property
    def compression_rate(self) -> float:
        return self.compressed_words / self.original_words if self.original_words else 0.0

    @property
    def variation_rate(self) -> float:
        """Share of the compressed words that are not in the original (new words: a paraphrase)."""
        return 1.0 - self.found / self.compressed_words if self.compressed_words else 0.0

    @property
    def hitting_rate(self) -> float:
        return self.found / self.original_words if self.original_words else 0.0

    @property
    def matching_rate(self) -> float:
        return sum(self.labels) / self.original_words if self.original_words else 0.0

    @property
    def alignment_gap(self) -> float:
        """Hitting rate minus matching rate: compressed words found somewhere in the original that the
        order-respecting matcher could not place (words moved or repeated)."""
        return self.hitting_rate - self.matching_rate


def align_words(original: Sequence[str], compressed: Sequence[str], window: int = 400) -> Alignment:
    """LLMLingua-2's word labeling: each compressed word, in order, marks the first unmarked equal
    original word (case-insensitive) found by looking alternately forward and backward from the previous
    match, up to ``window`` words; a forward jump beyond half the window moves the anchor by half the
    window only, so one stray match cannot drag the rest of the alignment along."""
    n = len(original)
    labels = [False] * n
    lowered = [w.lower() for w in original]
    vocab = set(original) | set(lowered)
    found = 0
    anchor = 0
    half = window // 2
    for word in compressed:
        low = word.lower()
        if word in vocab or low in vocab:
            found += 1
        if not n:
            continue
        for i in range(window):
            j = min(anchor + i, n - 1)
            if lowered[j] == low and not labels[j]:
                labels[j] = True
                anchor = anchor + half if j - anchor > half else j
                break
            j = max(anchor - i, 0)
            if lowered[j] == low and not labels[j]:
                labels[j] = True
                anchor = j
                break
    return Alignment(labels, found, len(compressed))


def drop_top(values: Sequence[float], fraction: float) -> np.ndarray:
    """Which values are in the top ``fraction`` (at or above its percentile, as the reference filters);
    zeros are never dropped, so a set where most chunks are perfect loses only imperfect ones."""
    v = np.asarray(values, dtype=np.float64)
    if not len(v) or fraction <= 0:
        return np.zeros(len(v), dtype=bool)
    threshold = np.percentile(v, 100 * (1 - fraction))
    return (v >= threshold) & (v > 0)


def chunk_words(
    words: Sequence[str], sizes: Sequence[int], budget: int, ends: frozenset[str] = SENTENCE_ENDS
) -> list[tuple[int, int]]:
    """Word ranges of at most ``budget`` tokens each (``sizes``: tokens per word), cut after the last
    sentence end that fits, else where the budget runs out (a single word longer than the budget is a
    chunk of its own and will be truncated)."""
    out, start, n = [], 0, len(words)
    while start < n:
        total, end, last_end = 0, start, None
        while end < n and (total + sizes[end] <= budget or end == start):
            total += sizes[end]
            if words[end] in ends:
                last_end = end + 1
            end += 1
        if end < n and last_end is not None and last_end > start:
            end = last_end
        out.append((start, end))
        start = end
    return out


# ------------------------------------------------------------------ the classifier


def _subtoken_sizes(tok, words: Sequence[str]) -> list[int]:
    if not words:
        return []
    enc = tok(list(words), is_split_into_words=True, add_special_tokens=False)
    sizes = [0] * len(words)
    for w in enc.word_ids():
        if w is not None:
            sizes[w] += 1
    return sizes


def classifier_features(
    tok, words: Sequence[str], labels: Sequence[bool] | None = None, max_length: int = 512
) -> list[dict]:
    """A text's words as classifier inputs, one per chunk of at most ``max_length`` tokens (specials
    included): ``input_ids``, ``word_ids`` (the word of each token, -1 for specials) and, with labels,
    ``labels`` (the word's label on each of its sub-tokens, -100 on specials, as the paper trains)."""
    sizes = _subtoken_sizes(tok, words)
    budget = max_length - tok.num_special_tokens_to_add()
    feats = []
    for start, end in chunk_words(words, sizes, budget):
        enc = tok(list(words[start:end]), is_split_into_words=True, truncation=True, max_length=max_length)
        wids = [-1 if w is None else start + w for w in enc.word_ids()]
        f = {"input_ids": enc["input_ids"], "word_ids": wids}
        if labels is not None:
            f["labels"] = [-100 if w < 0 else int(bool(labels[w])) for w in wids]
        feats.append(f)
    return feats


def train_classifier(
    base: str,
    texts: Sequence[Sequence[str]],
    labels: Sequence[Sequence[bool]],
    out: Path,
    *,
    epochs: float = 1.0,
    lr: float = 1e-5,
    batch_size: int = 10,
    max_length: int = 512,
    eval_fraction: float = 0.1,
    seed: int = 0,
    progress: Callable | None = None,
) -> dict[str, Any]:
    """Tune ``base`` (a BERT-style encoder folder) as LLMLingua-2's keep/drop token classifier on
    word-labelled texts and save it (with its tokenizer) to the folder ``out``. A seeded
    ``eval_fraction`` of the texts is held out; the result reports the held-out word accuracy and F1 of
    "keep" (words scored by the mean of their sub-tokens' keep-probability, kept above 0.5), next to
    the share of kept words (the majority baseline's accuracy is max(share, 1 - share))."""
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForTokenClassification.from_pretrained(
        base, num_labels=2, id2label={0: "drop", 1: "keep"}, label2id={"drop": 0, "keep": 1}
    )
    order = np.random.default_rng(seed).permutation(len(texts))
    n_eval = max(1, round(len(texts) * eval_fraction)) if eval_fraction > 0 and len(texts) > 1 else 0
    held, train_idx = order[:n_eval], order[n_eval:]
    rows = [
        {"input_ids": f["input_ids"], "labels": f["labels"]}
        for i in train_idx
        for f in classifier_features(tok, texts[i], labels[i], max_length)
    ]
    if not rows:
        raise ValueError("no labelled text to train the classifier on")
    out = Path(out)
    scratch = tempfile.mkdtemp(prefix="lingua-trainer-")
    args = TrainingArguments(
        output_dir=scratch,
        per_device_train_batch_size=batch_size,
        num_train_epochs=epochs,
        learning_rate=lr,
        seed=seed,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    callbacks = []
    if progress is not None:

        class _Progress(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                progress(state.global_step, state.max_steps, "steps")

        callbacks.append(_Progress())
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        data_collator=DataCollatorForTokenClassification(tok),
        callbacks=callbacks,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    try:
        result = trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model.eval()
    trainer.save_model(str(out))
    tok.save_pretrained(str(out))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics: dict[str, Any] = {
        "texts": len(train_idx),
        "chunks": len(rows),
        "steps": int(result.global_step),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "seconds": round(float(result.metrics.get("train_runtime", 0.0)), 2),
    }
    if n_eval:
        scorer = Compressor.from_loaded(model, tok, max_length=max_length)
        truth, pred = [], []
        for i in held:
            probs = scorer.word_probs([list(texts[i])])[0]
            truth.extend(bool(x) for x in labels[i])
            pred.extend(bool(p > 0.5) for p in probs)
        metrics.update(heldout_scores(truth, pred))
        metrics["heldout_texts"] = int(n_eval)
    return metrics


def heldout_scores(truth: Sequence[bool], pred: Sequence[bool]) -> dict[str, float]:
    t, p = np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)
    tp = float((t & p).sum())
    precision = tp / p.sum() if p.sum() else 0.0
    recall = tp / t.sum() if t.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "heldout_words": len(t),
        "heldout_accuracy": float((t == p).mean()) if len(t) else 0.0,
        "heldout_keep_f1": float(f1),
        "heldout_keep_share": float(t.mean()) if len(t) else 0.0,
    }


# ------------------------------------------------------------------ compression


@dataclass
class Compressed:
    text: str
    keep: list[bool]  # per word of the original (``split_words``)
    tokens_before: int
    tokens_after: int


def keep_by_rate(
    scores: Sequence[float], sizes: Sequence[int], rate: float, forced: Sequence[bool] | None = None
) -> list[bool]:
    """LLMLingua-2's selection in one chunk: every word's score repeated once per target token it costs,
    the threshold at percentile ``int(100 * (1 - rate) + 1)`` of those, words strictly above it kept
    (and, when the threshold is 1, words at 1); forced words score 1. ``rate`` >= 1 keeps everything."""
    s = np.asarray(scores, dtype=np.float64).copy()
    if forced is not None:
        s[np.asarray(forced, dtype=bool)] = 1.0
    if not len(s) or rate >= 1:
        return [True] * len(s)
    reduce = max(0.0, 1.0 - rate)
    expanded = np.repeat(s, np.asarray(sizes, dtype=np.int64))
    if not len(expanded):
        return [True] * len(s)
    threshold = np.percentile(expanded, int(100 * reduce + 1))
    return [bool(x > threshold or (threshold == 1.0 and x == threshold)) for x in s]


def cut(text: str, spans: Sequence[tuple[int, int]], keep: Sequence[bool], newlines: bool = True) -> str:
    """The text with the dropped words cut out: kept neighbours keep their original spacing; across a
    cut, a line break if the cut spanned one (with ``newlines``), else a space where the kept word had
    one before it, or follows one and is not punctuation ("eggs per day." -> "eggs.")."""
    parts: list[str] = []
    prev = None
    for i, ((a, b), k) in enumerate(zip(spans, keep, strict=True)):
        if not k:
            continue
        if prev is not None:
            gap = text[spans[prev][1] : a]
            if prev == i - 1:
                parts.append(gap)
            elif newlines and "\n" in gap:
                parts.append("\n")
            elif text[a - 1].isspace() or (gap[:1].isspace() and text[a].isalnum()):
                parts.append(" ")
            elif text[a].isalnum() and text[spans[prev][1] - 1].isalnum():
                parts.append(" ")  # never glue two words into one ("bicycle's" -> "bicycle s")
        parts.append(text[a:b])
        prev = i
    return "".join(parts)


class Compressor:
    """A LLMLingua-2 token classifier loaded once: word keep-probabilities, and texts cut to a rate."""

    def __init__(self, path: str, device: str = "cpu", max_length: int = 512, batch_size: int = 16):
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForTokenClassification.from_pretrained(path).to(device).eval()
        self._init(model, tok, max_length, batch_size)

    @classmethod
    def from_loaded(cls, model, tok, max_length: int = 512, batch_size: int = 16) -> Compressor:
        self = cls.__new__(cls)
        self._init(model, tok, max_length, batch_size)
        return self

    def _init(self, model, tok, max_length: int, batch_size: int) -> None:
        self.model, self.tok = model, tok
        self.max_length, self.batch_size = max_length, batch_size
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def sizes(self, words: Sequence[str]) -> list[int]:
        """Sub-tokens per word under the classifier's tokenizer (the default cost of a word)."""
        return _subtoken_sizes(self.tok, words)

    def chunked_probs(
        self, texts: Sequence[Sequence[str]], score: bool = True
    ) -> list[list[tuple[int, int, list[float]]]]:
        """Per text, its chunks as (first word, end word, keep-probability of each word in the chunk);
        without ``score`` the chunks only (probabilities NaN, no forward pass)."""
        import torch

        feats = [classifier_features(self.tok, words, None, self.max_length) for words in texts]
        flat = [(t, c) for t, fs in enumerate(feats) for c in range(len(fs))] if score else []
        flat.sort(key=lambda tc: -len(feats[tc[0]][tc[1]]["input_ids"]))
        token_probs: dict[tuple[int, int], list[float]] = {}
        device = next(self.model.parameters()).device
        for at in range(0, len(flat), self.batch_size):
            group = flat[at : at + self.batch_size]
            width = max(len(feats[t][c]["input_ids"]) for t, c in group)
            ids = torch.full((len(group), width), self.pad, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for r, (t, c) in enumerate(group):
                row = feats[t][c]["input_ids"]
                ids[r, : len(row)] = torch.tensor(row)
                mask[r, : len(row)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            probs = torch.softmax(logits.float(), dim=-1)[..., 1].cpu().tolist()
            for r, (t, c) in enumerate(group):
                token_probs[(t, c)] = probs[r][: len(feats[t][c]["input_ids"])]
        out = []
        for t, fs in enumerate(feats):
            chunks = []
            for c, f in enumerate(fs):
                wids = f["word_ids"]
                probs = token_probs.get((t, c)) or [math.nan] * len(wids)
                words = [w for w in wids if w >= 0]
                if not words:
                    continue
                first, end = min(words), max(words) + 1
                sums, counts = [0.0] * (end - first), [0] * (end - first)
                for w, p in zip(wids, probs, strict=True):
                    if w >= 0:
                        sums[w - first] += p
                        counts[w - first] += 1
                chunks.append((first, end, [s / n for s, n in zip(sums, counts, strict=True)]))
            out.append(chunks)
        return out

    def word_probs(self, texts: Sequence[Sequence[str]]) -> list[list[float]]:
        """Each word's keep-probability: the mean over its sub-tokens ("token_to_word='mean'")."""
        out = []
        for words, chunks in zip(texts, self.chunked_probs(texts), strict=True):
            probs = [math.nan] * len(words)
            for first, end, ps in chunks:
                probs[first:end] = ps
            out.append(probs)
        return out

    def compress(
        self,
        texts: Sequence[str],
        rate: float,
        force: Sequence[str] = (),
        newlines: bool = True,
        cost: Callable[[Sequence[str]], list[int]] | None = None,
        scores: Callable[[list[str], list[tuple[int, int, list[float]]]], list[list[float]]] | None = None,
    ) -> list[Compressed]:
        """Each text cut to about ``rate`` of its tokens (``cost(words)``: target tokens per word; the
        classifier's sub-tokens by default), chunk by chunk as the reference does. ``force``: words always
        kept. ``scores`` replaces the classifier's probabilities (the random and stop-word baselines use
        the same selection with their own scores)."""
        cost = cost or self.sizes
        spans = [word_spans(t) for t in texts]
        words = [[t[a:b] for a, b in s] for t, s in zip(texts, spans, strict=True)]
        chunked = self.chunked_probs(words, score=scores is None)
        forced_set = set(force)
        out = []
        for text, sp, ws, chunks in zip(texts, spans, words, chunked, strict=True):
            sizes = cost(ws)
            keep = [True] * len(ws)
            per_chunk = scores(ws, chunks) if scores is not None else [c[2] for c in chunks]
            for (first, end, _), sc in zip(chunks, per_chunk, strict=True):
                forced = [w in forced_set for w in ws[first:end]]
                keep[first:end] = keep_by_rate(sc, sizes[first:end], rate, forced)
            before = sum(sizes)
            after = sum(s for s, k in zip(sizes, keep, strict=True) if k)
            out.append(Compressed(cut(text, sp, keep, newlines), keep, before, after))
        return out


def random_scores(seed: int):
    """Baseline scores: uniform random per word (random deletion at the same rate)."""
    rng = np.random.default_rng(seed)

    def scores(words, chunks):
        return [list(rng.random(end - first)) for first, end, _ in chunks]

    return scores


def stopword_scores(seed: int, stop: frozenset[str] | None = None):
    """Baseline scores: stop words (and punctuation) below every other word, random within each group,
    so stop words go first and the rest of the rate is met by random deletion."""
    if stop is None:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        stop = frozenset(ENGLISH_STOP_WORDS)
    rng = np.random.default_rng(seed)

    def scores(words, chunks):
        out = []
        for first, end, _ in chunks:
            r = rng.random(end - first) / 2
            low = [w.lower() in stop or not any(c.isalnum() for c in w) for w in words[first:end]]
            out.append([x if lo else 0.5 + x for x, lo in zip(r, low, strict=True)])
        return out

    return scores
