"""LLMLingua-2 (Pan et al., Findings ACL 2024): prompt compression distilled into a token classifier.

Four steps, in recipe order:

``lingua_label``
    A teacher compresses each row's text under the paper's rules (delete words only, keep their order,
    change none, add none), chunk by chunk; the windowed matcher labels every original word kept or
    dropped; the row gets the labels and the two quality signals (variation rate, alignment gap).
``lingua_filter``
    Drops the chunks the paper drops: the top 10% by variation rate, then the top 10% of the rest by
    alignment gap (and rows the teacher failed on, counted).
``lingua_train``
    Tunes an encoder (MiniLM ships offline; the paper uses XLM-RoBERTa-large or mBERT) as the keep/drop
    token classifier on the labels; the classifier is the step's ``output_model``.
``compress``
    Cuts each row's text to ``rate`` of its tokens with the classifier (or with the random or stop-word
    baselines at the same rate); a released LLMLingua-2 checkpoint works too (declare it as an hf model).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.errors import FlywheelError
from dataflywheel.hashing import digest
from dataflywheel.models.base import CHAT
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Mapper, ModelRef, OpParams, Selection, Selector, Trainer
from dataflywheel.ops.llm import LLMParams, LLMTask, row_error
from dataflywheel.ops.train.sft import model_folder
from dataflywheel.train import lingua as L

COMPRESSED, LABELS = "lingua_compressed", "lingua_labels"
VARIATION, GAP, RATE = "lingua_variation_rate", "lingua_alignment_gap", "lingua_compression_rate"
ERROR = "error_lingua_label"
_LEAD = re.compile(r"^\s*(shortened|compressed)( text)?\s*:\s*", re.IGNORECASE)

COLUMN_HELP = "the text: a string column, or unset for the last user turn of messages"


def row_text(row: dict, column: str | None) -> str | None:
    if column is None:
        return S.last_turn(row.get(S.MESSAGES) or [], "user")
    value = row.get(column)
    return value if isinstance(value, str) else None


def text_reads(column: str | None) -> tuple[str, ...]:
    return (S.MESSAGES,) if column is None else (column,)


def sentence_chunks(words: list[str], size: int) -> list[tuple[int, int]]:
    return L.chunk_words(words, [1] * len(words), size)


class LinguaLabel(LLMTask, Mapper):
    """LLMLingua-2's label distillation: the teacher compresses the text (chunks of at most
    ``chunk_words`` words, cut at sentence ends), each word of the original is labelled kept or dropped
    by the windowed matcher, and the row gets ``lingua_labels`` (one per word, words as
    ``split_words`` counts them), ``lingua_compressed`` (the teacher's text), ``lingua_variation_rate``,
    ``lingua_alignment_gap`` and ``lingua_compression_rate`` (compressed words / original words). A
    chunk the teacher failed or answered with nothing leaves the row without labels, says why in
    ``error_lingua_label`` and is counted."""

    class Params(LLMParams):
        column: str | None = Field(None, description=COLUMN_HELP)
        chunk_words: int = Field(350, ge=8, description="words per teacher request at most")
        window: int = Field(400, ge=2, description="the matcher's window in words")
        max_tokens: int = Field(512, ge=1, description="reply length in tokens at most")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}
    writes = (COMPRESSED, LABELS, VARIATION, GAP, RATE, ERROR)
    batch_rows = 32

    def input_columns(self) -> list[str]:
        return list(text_reads(self.params.column))

    def output_columns(self) -> list[str]:
        return list(self.writes)

    def _chunks(self, row: dict) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]] | None:
        text = row_text(row, self.params.column)
        if not text or not text.strip():
            return None
        spans = L.word_spans(text)
        return text, spans, sentence_chunks([text[a:b] for a, b in spans], self.params.chunk_words)

    def prompt(self, row: dict) -> list[list[dict]] | None:
        got = self._chunks(row)
        if got is None:
            return None
        text, spans, chunks = got
        template = prompts.load(__file__, "lingua_compress.txt")
        return [
            [{"role": "user", "content": prompts.fill(template, text=text[spans[a][0] : spans[b - 1][1]])}]
            for a, b in chunks
        ]

    def parse(self, reply: str, row: dict) -> dict | None:
        text = _LEAD.sub("", reply.strip()).strip()
        return {"text": text} if L.split_words(text) else None

    def map(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        replies = self.ask(rows)
        out: dict[str, list] = {c: [] for c in self.writes}
        for row, asked in zip(rows, replies, strict=True):
            got = self._chunks(row)
            texts = [r.values[0]["text"] if r.values else None for r in asked]
            if got is None or not asked or any(t is None for t in texts):
                error = "no text to compress" if got is None else row_error(asked)
                for c in self.writes:
                    out[c].append(error if c == ERROR else None)
                self.stats["unlabelled"] += 1
                continue
            text, spans, chunks = got
            words = [text[a:b] for a, b in spans]
            labels: list[bool] = []
            found = compressed = 0
            for (a, b), reply in zip(chunks, texts, strict=True):
                al = L.align_words(words[a:b], L.split_words(reply), self.params.window)
                labels += al.labels
                found += al.found
                compressed += al.compressed_words
            whole = L.Alignment(labels, found, compressed)
            for c, v in (
                (COMPRESSED, " ".join(texts)),
                (LABELS, labels),
                (VARIATION, whole.variation_rate),
                (GAP, whole.alignment_gap),
                (RATE, whole.compression_rate),
                (ERROR, None),
            ):
                out[c].append(v)
            self.stats["labelled"] += 1
            self.stats["words"] += len(labels)
            self.stats["kept_words"] += sum(labels)
        types = {LABELS: pa.list_(pa.bool_()), COMPRESSED: pa.string(), ERROR: pa.string()}
        for c in self.writes:
            batch = S.put_column(batch, c, pa.array(out[c], types.get(c, pa.float64())))
        return batch


class LinguaFilter(Selector):
    """LLMLingua-2's quality filters on labelled rows: drop the top ``variation`` share by variation rate
    (the teacher wrote new words), then the top ``alignment_gap`` share of the rest by alignment gap
    (words the matcher could not place in order). Rows at zero are never dropped; rows without labels
    go too, each with its reason."""

    class Params(OpParams):
        variation: float = Field(0.1, ge=0, lt=1, description="share dropped by variation rate")
        alignment_gap: float = Field(0.1, ge=0, lt=1, description="share of the rest dropped by gap")

    reads = (LABELS, VARIATION, GAP)

    def select(self, table: pa.Table) -> Selection:
        n = table.num_rows
        labelled = np.asarray([v is not None for v in table.column(LABELS).to_pylist()], dtype=bool)
        unlabelled = np.flatnonzero(~labelled)
        reasons: dict[int, str] = {int(i): "no labels (the teacher failed)" for i in unlabelled}
        var = np.nan_to_num(table.column(VARIATION).to_numpy(zero_copy_only=False).astype(float))
        gap = np.nan_to_num(table.column(GAP).to_numpy(zero_copy_only=False).astype(float))
        idx = np.flatnonzero(labelled)
        drop = L.drop_top(var[idx], self.params.variation)
        for i in idx[drop]:
            reasons[int(i)] = "top variation rate"
        idx = idx[~drop]
        drop = L.drop_top(gap[idx], self.params.alignment_gap)
        for i in idx[drop]:
            reasons[int(i)] = "top alignment gap"
        keep = np.asarray([i for i in range(n) if i not in reasons], dtype=np.int64)
        return Selection(keep, reason=reasons)


class LinguaTrainParams(OpParams):
    model: str = ModelRef(description="the encoder to tune (BERT-style; e.g. embedded:all-minilm-l6-v2)")
    output_model: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the classifier's name")
    column: str | None = Field(None, description=COLUMN_HELP)
    epochs: float = Field(1.0, gt=0, description="passes over the labelled texts (the paper: 10)")
    lr: float = Field(1e-5, gt=0, description="learning rate (the paper: 1e-5)")
    batch_size: int = Field(10, ge=1, description="chunks per step (the paper: 10)")
    max_length: int = Field(512, ge=16, description="tokens per chunk at most")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="texts held out for the reported accuracy")


class LinguaTrain(Trainer):
    """Trains LLMLingua-2's keep/drop token classifier on ``lingua_labels`` (each word's label on all its
    sub-tokens) and saves it as ``output_model``, for ``compress``. Reports the held-out word accuracy and
    keep-F1 against the share of kept words. Rows without labels are skipped and counted; a row whose
    text no longer has as many words as labels is an error (it changed after labelling)."""

    Params: ClassVar = LinguaTrainParams

    def input_columns(self) -> list[str]:
        return [*text_reads(self.params.column), LABELS, S.ID]

    def train(self, data: pa.Table, out_dir: Path) -> dict[str, Any]:
        p = self.params
        texts, labels, skipped = [], [], 0
        for row in data.select(self.input_columns()).to_pylist():
            text, lab = row_text(row, p.column), row[LABELS]
            if lab is None or not text:
                skipped += 1
                continue
            words = L.split_words(text)
            if len(words) != len(lab):
                raise FlywheelError(
                    f"{self.name}: row {row[S.ID]} has {len(words)} words but {len(lab)} labels; "
                    "its text changed after lingua_label"
                )
            texts.append(words)
            labels.append(lab)
        base, _ = model_folder(self, p.model)
        metrics = L.train_classifier(
            base, texts, labels, out_dir, epochs=p.epochs, lr=p.lr, batch_size=p.batch_size,
            max_length=p.max_length, eval_fraction=p.eval_fraction, seed=self.ctx.seed,
            progress=self.progress,
        )  # fmt: skip
        metrics["rows_without_labels"] = skipped
        return metrics


class Compress(Mapper):
    """Prompt compression (LLMLingua-2): each row's text cut to about ``rate`` of its tokens by the
    classifier ``model`` (words scored by the mean keep-probability of their sub-tokens, threshold at the
    rate's percentile, chunk by chunk, ``force`` words always kept), in the original order with the
    original casing and line breaks. ``method: random`` or ``stopwords`` cut at the same rate by random
    deletion or stop words first (the baselines; the classifier's tokenizer still counts the tokens).
    The text is replaced (in the last user turn, or ``column``); the original goes to ``uncompressed``
    and ``compression_rate`` is tokens after / before."""

    class Params(OpParams):
        model: str = ModelRef(description="the token classifier (lingua_train's output, or a checkpoint)")
        rate: float = Field(0.5, gt=0, le=1, description="share of the tokens to keep")
        force: list[str] = Field(default_factory=list, description="words always kept, e.g. ['?', '.']")
        newlines: bool = Field(True, description="keep line breaks across cut words")
        column: str | None = Field(None, description=COLUMN_HELP)
        method: Literal["lingua", "random", "stopwords"] = Field(
            "lingua", description="the classifier, or a baseline at the same rate"
        )
        max_length: int = Field(512, ge=16, description="tokens per classifier chunk at most")
        batch_size: int = Field(16, ge=1, description="chunks per classifier pass")

    writes = ("uncompressed", "compression_rate")
    batch_rows = 64
    _compressor: L.Compressor | None = None

    def input_columns(self) -> list[str]:
        return list(text_reads(self.params.column))

    def output_columns(self) -> list[str]:
        return [*text_reads(self.params.column), *self.writes]

    def compressor(self) -> L.Compressor:
        if self._compressor is None:
            path, device = model_folder(self, self.params.model)
            self._compressor = L.Compressor(path, device, self.params.max_length, self.params.batch_size)
        return self._compressor

    def map(self, batch: pa.Table) -> pa.Table:
        p = self.params
        rows = batch.to_pylist()
        texts = [row_text(r, p.column) for r in rows]
        todo = [i for i, t in enumerate(texts) if t and t.strip()]
        scores = None
        if p.method != "lingua":
            first = rows[0].get(S.ID, "") if rows else ""  # each batch its own draw, the same on a rerun
            seed = int(digest(self.name, self.ctx.seed, self.ctx.step, first)[:8], 16)
            scores = L.random_scores(seed) if p.method == "random" else L.stopword_scores(seed)
        todo_texts = [texts[i] for i in todo]
        done = self.compressor().compress(todo_texts, p.rate, p.force, p.newlines, scores=scores)
        new_texts: list[str | None] = list(texts)
        rates: list[float | None] = [None] * len(rows)
        for i, c in zip(todo, done, strict=True):
            new_texts[i] = c.text
            rates[i] = c.tokens_after / c.tokens_before if c.tokens_before else None
            self.stats["tokens_before"] += c.tokens_before
            self.stats["tokens_after"] += c.tokens_after
        self.stats["compressed"] += len(todo)
        batch = S.put_column(batch, "uncompressed", pa.array(texts, pa.string()))
        batch = S.put_column(batch, "compression_rate", pa.array(rates, pa.float64()))
        if p.column is not None:
            return S.put_column(batch, p.column, pa.array(new_texts, pa.string()))
        convs = []
        for row, new in zip(rows, new_texts, strict=True):
            conv = [dict(m) for m in row[S.MESSAGES] or []]
            for m in reversed(conv):
                if m["role"] == "user" and new is not None:
                    m["content"] = new
                    break
            convs.append(conv)
        return S.put_column(batch, S.MESSAGES, pa.array(convs, S.CONVERSATION_TYPE))
