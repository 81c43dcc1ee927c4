"""Continuous batching on the real SmolLM2: requests that join a running batch at different steps get the
text the model gives them in process; a short request leaves before a long one; a cancelled request's rows
leave at the next step."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from dataflywheel.models.base import Sampling
from dataflywheel.models.constraint import Constraint, ending_shape
from dataflywheel.serve.batcher import Busy
from dataflywheel.serve.decoder import Cancelled, Decoder

QUESTIONS = [
    "What is the capital of France?",
    "Name three fruits.",
    "Write a haiku about the sea.",
    "How many legs does a spider have? Explain briefly why biologists count them that way.",
    "Translate 'good morning' into Spanish.",
    "Give me one tip for sleeping better.",
    "What is 12 times 7?",
    "Describe a bicycle in one sentence.",
]
LONG = "Write a 500-word story about a dragon who learns to bake bread."


def conv(q: str) -> list[dict]:
    return [{"role": "user", "content": q}]


@pytest.fixture(scope="module")
def decoder(smollm2):
    return Decoder(smollm2, max_batch=8)


def ids(backend, q: str) -> list[int]:
    return backend.encode(backend.render(conv(q)))


def wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_requests_joining_at_different_steps_get_the_in_process_greedy_text(smollm2, decoder):
    budgets = [4, 12, 20, 8, 16, 6, 10, 14]  # each request leaves at its own step
    handles = []
    for k, (q, m) in enumerate(zip(QUESTIONS, budgets, strict=True)):
        if k in (3, 6):  # later arrivals join a batch that is already decoding
            before = decoder.steps
            wait_for(lambda before=before: decoder.steps >= before + 3)
        handles.append(decoder.submit(ids(smollm2, q), Sampling(max_tokens=m)))
    got = [h.future.result(timeout=120) for h in handles]
    for q, m, r in zip(QUESTIONS, budgets, got, strict=True):
        (ref,) = smollm2.chat([conv(q)], Sampling(max_tokens=m))
        assert r.text == ref.text
        assert r.completions[0].tokens == ref.completions[0].tokens
        assert r.completions[0].finish_reason == ref.completions[0].finish_reason
        assert r.prompt_tokens == ref.prompt_tokens
    assert decoder.rows == [] and decoder.cache is None  # everyone left; nothing held


def test_stop_strings_and_logprobs_are_those_of_the_in_process_model(smollm2, decoder):
    sampling = Sampling(max_tokens=24, stop=["\n", "Paris", "four"], logprobs=True)
    handles = [decoder.submit(ids(smollm2, q), sampling) for q in QUESTIONS[:4]]
    got = [h.future.result(timeout=120) for h in handles]
    ref = smollm2.chat([conv(q) for q in QUESTIONS[:4]], sampling)
    assert any(r.completions[0].finish_reason == "stop" for r in ref)  # the stops do cut here
    for a, b in zip(got, ref, strict=True):
        ca, cb = a.completions[0], b.completions[0]
        assert (ca.text, ca.finish_reason, ca.tokens, ca.token_strs) == (
            cb.text,
            cb.finish_reason,
            cb.tokens,
            cb.token_strs,
        )
        np.testing.assert_allclose(ca.logprobs, cb.logprobs, atol=1e-4)


def test_a_short_request_leaves_before_a_long_one_and_a_cancelled_one_leaves_at_once(smollm2, decoder):
    long = decoder.submit(ids(smollm2, LONG), Sampling(max_tokens=200))
    wait_for(lambda: decoder.rows)
    started = decoder.steps
    short = decoder.submit(ids(smollm2, QUESTIONS[0]), Sampling(max_tokens=4))
    short.future.result(timeout=60)
    assert not long.future.done()  # the short one did not wait for the long one
    assert decoder.steps - started <= 8  # it joined within a step or two and left after its 4 tokens
    long.cancel()
    with pytest.raises(Cancelled):
        long.future.result(timeout=30)
    assert decoder.rows == [] and decoder.cache is None
    steps = decoder.steps
    time.sleep(0.3)
    assert decoder.steps == steps  # nothing decodes for a request nobody waits for


def test_seeded_samples_do_not_depend_on_the_company_they_run_in(smollm2, decoder):
    sampling = Sampling(max_tokens=12, temperature=0.9, top_p=0.9, n=3, seed=11)
    alone = decoder.submit(ids(smollm2, QUESTIONS[2]), sampling).future.result(timeout=60)
    others = [decoder.submit(ids(smollm2, q), Sampling(max_tokens=6)) for q in QUESTIONS[3:6]]
    crowd = decoder.submit(ids(smollm2, QUESTIONS[2]), sampling).future.result(timeout=60)
    [h.future.result(timeout=60) for h in others]
    texts = [c.text for c in alone.completions]
    assert texts == [c.text for c in crowd.completions]
    assert len(set(texts)) == 3  # three draws, not one copied
    other_seed = sampling.model_copy(update={"seed": 12})
    different = decoder.submit(ids(smollm2, QUESTIONS[2]), other_seed).future.result(timeout=60)
    assert [c.text for c in different.completions] != texts


def test_streamed_text_is_the_final_text_and_never_what_a_stop_string_cuts(smollm2, decoder):
    pieces: list[str] = []
    sampling = Sampling(max_tokens=24, stop=[" the "])
    h = decoder.submit(ids(smollm2, QUESTIONS[7]), sampling, on_text=lambda j, t: pieces.append(t))
    final = h.future.result(timeout=60)
    streamed = "".join(pieces)
    assert len(pieces) > 3 and final.text.startswith(streamed)
    assert len(final.text) - len(streamed) <= len(" the ") + 8  # held back: at most a stop's length + a token
    assert " the " not in streamed


def test_a_prompt_too_long_is_an_error_and_a_full_queue_is_busy(smollm2):
    d = Decoder(smollm2, max_queue=0)
    too_long = d.submit([1] * smollm2.max_length, Sampling(max_tokens=8)).future.result(timeout=5)
    assert too_long.error and "exceeds the model's" in too_long.error
    with pytest.raises(Busy):
        d.submit(ids(smollm2, QUESTIONS[0]), Sampling(max_tokens=4))


def test_constrained_requests_decode_beside_plain_ones_each_as_in_process(smollm2, decoder):
    """A request's grammar masks its own rows only: constrained and plain requests share the batch, and
    each gets the in-process model's text under its own sampling."""
    verdict = ending_shape(r"\[\[[1-6]\]\]", 20, avoid="[")  # free text bounded in tokens
    yes_no = Constraint(choice=["yes", "no"])
    asks = [
        (QUESTIONS[0], Sampling(max_tokens=24, constraint=verdict)),
        (QUESTIONS[1], Sampling(max_tokens=12)),
        (QUESTIONS[6], Sampling(max_tokens=6, constraint=yes_no)),
        (QUESTIONS[2], Sampling(max_tokens=24, temperature=0.9, n=2, seed=4, constraint=verdict)),
    ]
    handles = [decoder.submit(ids(smollm2, q), s) for q, s in asks]
    for (q, s), h in zip(asks, handles, strict=True):
        r = h.future.result(timeout=120)
        (ref,) = smollm2.chat([conv(q)], s)
        if s.temperature == 0:
            assert r.text == ref.text
        for c in r.completions:
            if s.constraint is not None:
                pattern = s.constraint.choice_regex() if s.constraint.choice else r"[^\[]*\[\[[1-6]\]\]"
                assert re.fullmatch(pattern, c.text), c.text
                assert c.finish_reason == "stop"
