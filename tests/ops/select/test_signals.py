from __future__ import annotations

import pytest
from pydantic import ValidationError

from dataflywheel.data import io
from dataflywheel.ops import registry
from dataflywheel.ops.base import OpContext
from dataflywheel.ops.select.text_stats import ngram_repetition
from dataflywheel.ops.select.truncation import is_truncated
from tests.conftest import ROOT


def conv(*turns):
    roles = ["user", "assistant"] * len(turns)
    return {"messages": [{"role": r, "content": t} for r, t in zip(roles, turns, strict=False)]}


def score(name, rows, **params):
    op = registry.get(name)(params, OpContext())
    op.setup()
    return op.score(io.rows_to_table(rows))


def test_text_stats_exact_values():
    out = score(
        "text_stats",
        [conv("q", "the cat the cat the cat!")],
        fields=["response", "instruction"],
        word_ngram=2,
        char_ngram=3,
    )
    assert out["score_response_words"] == [6.0] and out["score_response_chars"] == [24.0]
    # bigrams: (the cat) x3, (cat the) x2 -> all 5 repeated
    assert out["score_response_word_rep"] == [1.0]
    assert out["score_response_special_ratio"] == [pytest.approx(1 / 24)]
    assert out["score_response_alnum_ratio"] == [pytest.approx(18 / 24)]
    assert out["score_response_stopword_ratio"] == [0.5]
    assert out["score_instruction_words"] == [1.0]
    assert ngram_repetition(list("abcabc"), 3) == pytest.approx(2 / 4)
    assert ngram_repetition(["a"], 3) == 0.0


def test_multi_turn_is_scored_per_turn_and_aggregated():
    rows = [conv("q1", "one two three", "q2", "four five six seven eight")]
    mean = score("text_stats", rows)
    assert mean["score_response_words"] == [4.0]
    assert score("text_stats", rows, aggregate="max")["score_response_words"] == [5.0]
    assert score("text_stats", rows, fields=["conversation"])["score_conversation_words"] == [10.0]


def test_refusal_and_truncation_and_copying():
    rows = [
        conv("Write a poem.", "As an AI language model, I cannot write poems."),
        conv("List planets.", "1. Mercury\n2. Venus\n3."),
        conv("Describe your weekend.", "Describe your weekend."),
        conv("Capital of France?", "Paris"),
    ]
    assert score("refusal", rows)["score_response_refusal"] == [1.0, 0.0, 0.0, 0.0]
    assert score("truncation", rows)["score_response_truncated"] == [0.0, 1.0, 0.0, 0.0]
    copy = score("copies_instruction", rows)["score_response_copy"]
    assert copy[2] == 1.0 and max(copy[0], copy[1], copy[3]) < 0.6


@pytest.mark.parametrize(
    ("text", "truncated"),
    [
        ("Gears change how far the wheel turns for each turn of the pedals, which", True),
        ("Drinking enough water helps regulate body temperature, keeps joints lubricated, and", True),
        ("Here are the steps:", True),
        ("The answer is 42.", False),
        ("Paris", False),
        ("def f(x):\n    return x + 1", False),
        ("- eggs\n- flour\n- sugar", False),
        ("Thanks for the invitation, I will join you then.\n\nBest regards,\nTom", False),
        ("", True),
    ],
)
def test_truncation_cases(text, truncated):
    assert is_truncated(text) is truncated


def test_language_id_on_the_example_pool():
    rows = io.read_all(str(ROOT / "examples" / "demo_pool.jsonl"), on_error="skip").rows
    out = score("language_id", rows, fields=["conversation"])
    langs = dict(zip([r["messages"][0]["content"] for r in rows], out["tag_conversation_lang"], strict=True))
    assert langs["¿Cuál es el río más largo de Europa?"] == "es"
    assert langs["Explique brièvement ce qu'est une démocratie."] == "fr"
    assert langs["Nenne drei Vorteile des Fahrradfahrens."] == "de"
    # everything else is English, but the translation task, whose answer is Spanish
    mixed = "Translate 'Good morning, how are you?' into Spanish."
    english = [
        lang == "en"
        for r, lang in zip(rows, out["tag_conversation_lang"], strict=True)
        if r["example_kind"] != "other_language" and r["messages"][0]["content"] != mixed
    ]
    assert all(english) and len(english) == 51
    assert all(0 <= c <= 1 for c in out["score_conversation_lang_conf"])


def test_heuristics_catch_the_example_pool_defects():
    rows = io.read_all(str(ROOT / "examples" / "demo_pool.jsonl"), on_error="skip").rows
    kinds = [r["example_kind"] for r in rows]
    trunc = score("truncation", rows)["score_response_truncated"]
    refusal = score("refusal", rows)["score_response_refusal"]
    assert [k for k, t in zip(kinds, trunc, strict=True) if t == 1.0] == ["truncated"] * 5
    assert [k for k, r in zip(kinds, refusal, strict=True) if r == 1.0] == ["refusal"] * 2


@pytest.mark.slow
def test_token_length_with_the_embedded_tokenizer(smollm2):
    out = score("token_length", [conv("q", "Hello world, this is a test.")])
    assert out["score_response_tokens"] == [float(len(smollm2.encode("Hello world, this is a test.")))]


@pytest.mark.parametrize("op", ["refusal", "truncation"])
def test_an_unknown_aggregate_is_refused_when_the_op_is_built(op):
    with pytest.raises(ValidationError, match="aggregate"):
        registry.get(op)({"aggregate": "median"})
    assert registry.get(op)({"aggregate": "mean"}).params.aggregate == "mean"
