"""LLMLingua-2's pieces against hand computations, and the compressor against the ``llmlingua`` package
with the same (tiny random) classifier."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.base import OpContext
from dataflywheel.ops.distill.lingua import Compress, LinguaFilter, LinguaLabel
from dataflywheel.train import lingua as L
from tests.fakes import ScriptedBackend, context

TEXTS = [
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins.",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total?",
    "Josh decides to try flipping a house.\nHe buys a house for $80,000 and then puts in $50,000 in repairs.",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages a year?",
]


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A tiny random BERT token classifier with MiniLM's WordPiece vocabulary. The folder name carries
    'bert-base-multilingual-cased': the switch by which ``llmlingua`` reads BERT-style tokens."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    from dataflywheel.models import embedded

    tok = AutoTokenizer.from_pretrained(embedded.resolve(embedded.MINILM))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, num_labels=2,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("lingua") / "tiny-bert-base-multilingual-cased"
    BertForTokenClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_words_and_cut_keep_the_original_text():
    text = "Janet's ducks lay 16 eggs per day.\nShe sells them for $2."
    words = L.split_words(text)
    assert words[:6] == ["Janet", "'", "s", "ducks", "lay", "16"] and words[-3:] == ["$", "2", "."]
    spans = L.word_spans(text)
    keep = [w not in {"'", "s", "per", "day", "them", "for"} for w in words]
    assert L.cut(text, spans, keep) == "Janet ducks lay 16 eggs.\nShe sells $2."
    assert L.cut(text, spans, keep, newlines=False) == "Janet ducks lay 16 eggs.\nShe sells $2."  # no cut
    keep[words.index(".")] = False  # now the line break is inside a cut
    assert L.cut(text, spans, keep) == "Janet ducks lay 16 eggs\nShe sells $2."
    assert L.cut(text, spans, keep, newlines=False) == "Janet ducks lay 16 eggs She sells $2."
    assert L.cut(text, spans, [True] * len(words)) == text
    text = "A bicycle's gears"
    keep = [w != "'" for w in L.split_words(text)]
    assert L.cut(text, L.word_spans(text), keep) == "A bicycle s gears"  # two words stay two words


def test_align_words_by_hand():
    original = "the cat sat on the mat and the dog sat too".split()
    al = L.align_words(original, "cat sat the mat dog".split())
    # "the" after "sat" takes the next unmatched "the" looking forward from "sat" (index 4), not index 0
    assert al.labels == [False, True, True, False, True, True, False, False, True, False, False]
    assert (al.found, al.compressed_words) == (5, 5)
    assert al.variation_rate == 0.0 and al.matching_rate == pytest.approx(5 / 11)
    # a new word ("feline") and a word used twice: found counts it, the matcher places it once
    al = L.align_words(["a", "cat", "ran"], ["feline", "cat", "cat"])
    assert al.labels == [False, True, False]
    assert al.variation_rate == pytest.approx(1 / 3)
    assert al.alignment_gap == pytest.approx(2 / 3 - 1 / 3)
    assert L.align_words([], ["x"]).labels == [] and L.align_words(["x"], []).compression_rate == 0.0


def test_align_window_moves_by_half_at_most():
    original = [f"w{i}" for i in range(20)]
    # window 4: "w3" is 3 ahead (> half), so the anchor moves to 2, not 3; "w1" is then found backward
    al = L.align_words(original, ["w3", "w1"], window=4)
    assert [i for i, k in enumerate(al.labels) if k] == [1, 3]
    # "w9" is beyond the window from the anchor: not placed (but found)
    al = L.align_words(original, ["w9"], window=4)
    assert not any(al.labels) and al.found == 1


def test_drop_top_never_drops_zeros():
    assert L.drop_top([0.0] * 9 + [0.5], 0.1).tolist() == [False] * 9 + [True]
    assert not L.drop_top([0.0] * 10, 0.1).any()
    v = np.arange(20) / 20
    assert L.drop_top(v, 0.1).tolist() == [False] * 18 + [True, True]  # >= the 90th percentile, 0.855


def test_chunks_end_at_sentences_within_the_budget():
    words = ["a", "b", ".", "c", "d", "e", ".", "f"]
    assert L.chunk_words(words, [1] * 8, 5) == [(0, 3), (3, 8)]  # the rest fits whole
    # no sentence end in (a b): cut at the budget; (. c) backs off to the end after "."
    assert L.chunk_words(words, [1] * 8, 2) == [(0, 2), (2, 3), (3, 5), (5, 7), (7, 8)]
    assert L.chunk_words(["long", "x"], [9, 1], 4) == [(0, 1), (1, 2)]  # a word over budget alone


def test_keep_by_rate_by_hand():
    scores, sizes = [0.9, 0.1, 0.5, 0.3, 0.7], [1, 1, 2, 1, 1]
    # expanded: 0.9 0.1 0.5 0.5 0.3 0.7; rate 0.5 -> percentile int(100 * 0.5 + 1) = 51 -> 0.5
    assert np.percentile([0.9, 0.1, 0.5, 0.5, 0.3, 0.7], 51) == pytest.approx(0.5)
    assert L.keep_by_rate(scores, sizes, 0.5) == [True, False, False, False, True]
    assert L.keep_by_rate(scores, sizes, 0.5, forced=[False, True, False, False, False]) == [
        True, True, False, False, True,
    ]  # fmt: skip
    assert L.keep_by_rate(scores, sizes, 1.0) == [True] * 5
    assert L.keep_by_rate([1.0, 1.0, 0.2], [1, 1, 1], 0.3) == [True, True, False]  # threshold 1 keeps 1s


def test_classifier_features_label_every_subtoken(tiny_classifier):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_classifier)
    words = ["Unbelievably", "cheap", "eggs", "."]
    (f,) = L.classifier_features(tok, words, [True, False, True, False])
    pieces = tok.convert_ids_to_tokens(f["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    n = len(tok.tokenize("Unbelievably"))
    assert n > 1
    assert f["labels"] == [-100] + [1] * n + [0, 1, 0] + [-100]
    assert f["word_ids"] == [-1] + [0] * n + [1, 2, 3] + [-1]
    many = ["w"] * 30 + ["."] + ["v"] * 30
    chunks = L.classifier_features(tok, many, [True] * 61, max_length=40)
    assert [len(c["input_ids"]) for c in chunks] == [33, 32]  # cut after the sentence end, specials added
    assert chunks[1]["word_ids"][1] == 31


def test_compressor_keeps_the_same_words_as_llmlingua(tiny_classifier):
    llmlingua = pytest.importorskip("llmlingua.prompt_compressor")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_classifier)

    class Counter:  # llmlingua counts GPT-3.5 tokens through tiktoken (a download); count ours instead
        def encode(self, word):
            return tok.encode(word, add_special_tokens=False)

    llmlingua.tiktoken.encoding_for_model = lambda name: Counter()
    ref = llmlingua.PromptCompressor(model_name=tiny_classifier, use_llmlingua2=True, device_map="cpu")
    ours = L.Compressor(tiny_classifier)
    for rate, force in ((0.5, []), (0.33, ["?", "."])):
        got = ours.compress(TEXTS, rate, force)
        for text, c in zip(TEXTS, got, strict=True):
            r = ref.compress_prompt_llmlingua2([text], rate=rate, force_tokens=force, return_word_label=True)
            pairs = [p.rsplit(" ", 1) for p in r["fn_labeled_original_prompt"].split("\t\t|\t\t")]
            assert [w for w, _ in pairs] == [w.lower() for w in L.split_words(text)]
            assert [lab == "1" for _, lab in pairs] == c.keep
            # the same words, in the original casing and spacing
            kept = [w for w, k in zip(L.split_words(text), c.keep, strict=True) if k]
            assert L.split_words(c.text) == kept
            assert 0 < c.tokens_after < c.tokens_before


def _table(texts):
    return io.rows_to_table(
        [{S.ID: f"r{i}", S.MESSAGES: [{"role": "user", "content": t}]} for i, t in enumerate(texts)]
    )


def test_lingua_label_aligns_each_chunk_and_records_failures():
    def reply(conv):
        text = conv[-1]["content"].split("Text:\n", 1)[1].split("\n\nWrite only", 1)[0]
        if "robe" in text:
            return None  # the request fails
        if "Josh" in text:
            return "   "  # nothing: unparsed
        return "Shortened text: " + " ".join(w for w in L.split_words(text) if len(w) > 3)

    lm = ScriptedBackend(default=reply)
    op = LinguaLabel({"model": "m", "chunk_words": 12}, ctx=context(m=lm))
    out = op.map(_table(TEXTS)).to_pylist()
    first = out[0]
    words = L.split_words(TEXTS[0])
    assert first["lingua_labels"] == [len(w) > 3 for w in words]
    assert first["lingua_variation_rate"] == 0.0 and first["lingua_alignment_gap"] == 0.0
    assert first["lingua_compression_rate"] == pytest.approx(sum(len(w) > 3 for w in words) / len(words))
    assert len(lm.calls) == sum(len(L.chunk_words(L.split_words(t), [1] * 99, 12)) for t in TEXTS)
    assert out[1]["lingua_labels"] is None and out[1]["error_lingua_label"].startswith("request failed")
    assert out[2]["lingua_labels"] is None and out[2]["error_lingua_label"].startswith("unparsed reply")
    assert out[3]["error_lingua_label"] is None
    assert (op.stats["labelled"], op.stats["unlabelled"]) == (2, 2)


def test_lingua_filter_drops_top_variation_then_top_gap():
    n = 20
    table = pa.table(
        {
            S.ID: [f"r{i}" for i in range(n)],
            "lingua_labels": [None] + [[True]] * (n - 1),
            "lingua_variation_rate": [None] + [0.0] * 16 + [0.2, 0.3, 0.4],
            "lingua_alignment_gap": [None] + [0.0] * 14 + [0.5, 0.6, 0.1, 0.1, 0.1],
        }
    )
    sel = LinguaFilter({}).select(table)
    assert sel.reason[0] == "no labels (the teacher failed)"
    assert {i for i, r in sel.reason.items() if r == "top variation rate"} == {18, 19}
    assert {i for i, r in sel.reason.items() if r == "top alignment gap"} == {15, 16}  # >= 0.26
    assert len(sel.indices) == n - 5


def test_compress_op_replaces_the_prompt_and_baselines_meet_the_rate(tiny_classifier):
    from dataflywheel.models.client import Model
    from dataflywheel.recipe.models import ModelSpec

    spec = ModelSpec(backend="hf", model=tiny_classifier, device="cpu")
    ctx = OpContext(models={"clf": Model("clf", spec)})
    table = _table(TEXTS)
    expected = L.Compressor(tiny_classifier).compress(TEXTS, 0.5)
    out = Compress({"model": "clf", "rate": 0.5}, ctx=ctx).map(table).to_pylist()
    for row, text, e in zip(out, TEXTS, expected, strict=True):
        assert row["uncompressed"] == text and row[S.MESSAGES][-1]["content"] == e.text
        assert row["compression_rate"] == pytest.approx(e.tokens_after / e.tokens_before)
    for method in ("random", "stopwords"):
        got = Compress({"model": "clf", "rate": 0.5, "method": method}, ctx=ctx).map(table).to_pylist()
        rates = [r["compression_rate"] for r in got]
        assert all(0.35 < r < 0.6 for r in rates), rates
    got = Compress({"model": "clf", "rate": 0.4, "method": "stopwords"}, ctx=ctx).map(table).to_pylist()
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    for row in got:  # stop words go first: none is left while a content word was cut
        before = L.split_words(row["uncompressed"])
        kept = L.split_words(row[S.MESSAGES][-1]["content"])
        if any(w.lower() in ENGLISH_STOP_WORDS for w in kept):
            assert all(w in kept for w in before if w.isalnum() and w.lower() not in ENGLISH_STOP_WORDS)
