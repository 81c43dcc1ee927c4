import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from dataflywheel.lib.rouge import RougePool, lcs_length, rouge_l, rouge_tokens

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
WORDS = st.lists(st.sampled_from("the a cat dog sat on mat list five ways it".split()), max_size=25)


def reference(a: str, b: str) -> float:
    return SCORER.score(a, b)["rougeL"].fmeasure


def test_tokens_match_rouge_score():
    for text in ["Hello, Wörld! it's 3.5", "  ", "Write a PROGRAM_in C++", "naïve café — 日本"]:
        assert rouge_tokens(text) == SCORER._tokenizer.tokenize(text)


@settings(max_examples=300, deadline=None)
@given(WORDS, WORDS)
def test_rouge_l_equals_rouge_score_exactly(a, b):
    assert rouge_l(" ".join(a), " ".join(b)) == reference(" ".join(a), " ".join(b))


def test_lcs_on_known_pairs():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert lcs_length([], list("abc")) == 0
    assert lcs_length(list("abc"), list("abc")) == 3
    assert lcs_length(list("abc"), list("xyz")) == 0


def test_pool_finds_what_a_full_scan_finds(shared_data):
    """Every decision and every nearest score over the 175 seed tasks equals a rouge_score scan."""
    texts = [
        json.loads(line)["instruction"] for line in open(shared_data / "self_instruct" / "seed_tasks.jsonl")
    ]
    rng = random.Random(0)
    # near-copies of seeds, so some candidates exceed the threshold
    extra = []
    for t in rng.sample(texts, 40):
        words = t.split()
        words.insert(rng.randrange(len(words) + 1), rng.choice(["please", "quickly", "now"]))
        extra.append(" ".join(words))
    pool = RougePool(0.7)
    exceeded = 0
    for text in texts + extra:
        full = max((reference(p, text) for p in pool.texts), default=0.0)
        near = pool.nearest(text)
        assert (near.score > 0.7) == (full > 0.7)
        if full > 0.7:
            exceeded += 1
            assert near.score == full
            assert reference(pool.texts[near.index], text) == full
        assert pool.nearest(text, exact=True).score == full
        if near.score <= 0.7:
            pool.add(text)
    assert exceeded >= 30  # the near-copies were found
