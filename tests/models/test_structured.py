"""Structured generation: constraints are checked before any call, enforced by the hf backend while
decoding (a tiny random model and the real SmolLM2), sent in each server kind's own fields by the openai
and vllm backends, and counted where a backend cannot enforce them."""

from __future__ import annotations

import json
import re
import sys
import types

import pytest

from dataflywheel.models.base import CHAT, COMPLETE, Backend, ChatResult, Completion, ModelError, Sampling
from dataflywheel.models.client import Model
from dataflywheel.models.constraint import Constraint, ending_shape
from dataflywheel.models.openai import OpenAIBackend, constraint_fields
from dataflywheel.models.spec import ModelSpec
from dataflywheel.ops.parsing import parse_score

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
# a random model fills strings until max_tokens: the tiny-model test bounds them
SHORT = {**SCHEMA, "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}}}
JUDGE = ending_shape(r"\[\[[1-6]\]\]", 30, avoid="[").portable().regex  # what a server is sent


# ---------------------------------------------------------------- the constraint itself
def test_a_constraint_takes_exactly_one_shape_and_bad_ones_fail_before_any_call():
    assert Constraint(regex="a+").kind == "regex"
    assert Constraint(choice=["yes", "no"]).text == '["yes", "no"]'
    with pytest.raises(ValueError, match="exactly one of"):
        Constraint()
    with pytest.raises(ValueError, match="exactly one of"):
        Constraint(regex="a", choice=["a"])
    with pytest.raises(ValueError, match=r"invalid regex.*unclosed character class"):
        Constraint(regex="[a-")
    with pytest.raises(ValueError, match=r"invalid json_schema.*objectx"):
        Constraint(json_schema={"type": "objectx"})
    with pytest.raises(ValueError, match="invalid grammar"):
        Constraint(grammar='root ::= "a" | missing')
    with pytest.raises(ValueError, match="non-empty"):
        Constraint(choice=[])
    with pytest.raises(ValueError, match="invalid regex"):
        Sampling(constraint={"regex": "(a"})


def test_the_constraint_is_part_of_the_call_cache_key():
    from dataflywheel.models.cache import CallCache

    plain = {"messages": [], "sampling": Sampling().model_dump()}
    shaped = {"messages": [], "sampling": Sampling(constraint=Constraint(regex="a")).model_dump()}
    other = {"messages": [], "sampling": Sampling(constraint=Constraint(regex="b")).model_dump()}
    keys = {CallCache.key("fp", "chat", r) for r in (plain, shaped, other)}
    assert len(keys) == 3


def test_an_ending_leaves_free_text_then_fixes_the_verdict():
    rx = re.compile(JUDGE)
    assert rx.fullmatch("The answer is clear (and) correct.\n[[5]]")
    assert not rx.fullmatch("see [1]: fine [[5]]")  # the free text holds no "[": the ending is the first
    assert rx.fullmatch("[[2]]")
    assert not rx.fullmatch("good [[5]] then more")  # the ending is the end
    assert not rx.fullmatch("x" * 61 + "[[5]]")  # the free text is bounded
    assert not rx.fullmatch("fine [[7]]")


# ---------------------------------------------------------------- hf: a tiny random model
@pytest.fixture(scope="module")
def tiny(tiny_llama):
    from dataflywheel.models.hf import HFBackend

    return HFBackend(tiny_llama, device="cpu")


CONV = [[{"role": "user", "content": "Say something."}]]


def test_a_random_model_writes_only_what_the_regex_allows(tiny):
    free = tiny.chat(CONV, Sampling(max_tokens=24))[0].text
    assert not re.fullmatch(r"[a-z]{3,8}-\d{2}", free)  # unconstrained, a random model writes noise
    s = Sampling(
        max_tokens=24, temperature=1.0, n=4, seed=1, constraint=Constraint(regex=r"[a-z]{3,8}-\d{2}")
    )
    (r,) = tiny.chat(CONV, s)
    assert len(r.completions) == 4
    for c in r.completions:
        assert re.fullmatch(r"[a-z]{3,8}-\d{2}", c.text), c.text
        assert c.finish_reason == "stop"  # the grammar completed: a whole reply, not a cut one


def test_a_random_model_writes_json_that_satisfies_the_schema_and_picks_a_choice(tiny):
    s = Sampling(max_tokens=64, temperature=1.0, n=3, seed=2, constraint=Constraint(json_schema=SHORT))
    (r,) = tiny.chat(CONV, s)
    assert len(r.completions) == 3
    for c in r.completions:
        assert c.finish_reason == "stop", c.text
        got = json.loads(c.text)
        assert set(got) == {"name", "age"} and isinstance(got["name"], str) and isinstance(got["age"], int)
    (r,) = tiny.complete(["x"], Sampling(max_tokens=8, constraint=Constraint(choice=["alpha", "beta"])))
    assert r.text in ("alpha", "beta") and r.completions[0].finish_reason == "stop"


def test_free_text_bounded_in_tokens_always_leaves_the_ending_room(tiny):
    """A random model writes noise (often one character a token): with the free text bounded in tokens,
    every sample still closes with its verdict before max_tokens, which a bound in characters cannot
    promise."""
    shape = ending_shape(r"\[\[[1-6]\]\]", 20, avoid="[")
    (r,) = tiny.chat(CONV, Sampling(max_tokens=28, temperature=1.0, n=8, seed=3, constraint=shape))
    for c in r.completions:
        assert c.finish_reason == "stop" and re.fullmatch(r"[^\[]*\[\[[1-6]\]\]", c.text), c.text
        assert c.tokens <= 28
    assert shape.portable().regex == r"[^\[]{0,40}(?:\[\[[1-6]\]\])"  # what a server is sent


def test_parts_compile_to_lark_and_free_text_may_not_swallow_what_follows():
    from dataflywheel.models.constraint import Part

    c = Constraint(parts=[Part(text="Q: "), Part(free="[^\\n]", max_tokens=5, min_chars=1), Part(text="\nA")])
    assert c.kind == "parts" and "p1[max_tokens=5]: /[^\\n]+/" in c.lark()
    assert c.portable().regex == r"Q: [^\n]{1,10}\nA"
    with pytest.raises(ValueError, match="would swallow"):
        Constraint(parts=[Part(free="[a-z]", max_tokens=3), Part(text="abc")])
    with pytest.raises(ValueError, match="max_tokens goes with free text"):
        Part(free="[a-z]")


def test_a_grammar_that_cannot_finish_within_max_tokens_is_cut_and_says_length(tiny):
    (r,) = tiny.chat(CONV, Sampling(max_tokens=4, constraint=Constraint(regex=r"[ab]{40}")))
    c = r.completions[0]
    assert c.finish_reason == "length" and re.fullmatch(r"[ab]+", c.text) and len(c.text) < 40


# ---------------------------------------------------------------- hf: the real SmolLM2

JUDGE_PROMPTS = [
    "Rate how helpful this answer is on a scale of 1 to 6.\nQuestion: What is the capital of France?\n"
    "Answer: Paris.\nExplain briefly, then give your rating as [[k]].",
    "Rate how helpful this answer is on a scale of 1 to 6.\nQuestion: How do I boil an egg?\n"
    "Answer: Put it in water.\nExplain briefly, then give your rating as [[k]].",
    "Rate how helpful this answer is on a scale of 1 to 6.\nQuestion: Name a prime number.\n"
    "Answer: 9.\nExplain briefly, then give your rating as [[k]].",
    "Rate how helpful this answer is on a scale of 1 to 6.\nQuestion: What color is grass?\n"
    "Answer: Green, because of chlorophyll.\nExplain briefly, then give your rating as [[k]].",
]


@pytest.mark.slow
def test_smollm2_under_a_judge_ending_always_gives_a_readable_verdict(smollm2):
    convs = [[{"role": "user", "content": p}] for p in JUDGE_PROMPTS]
    shaped = Sampling(max_tokens=48, constraint=ending_shape(r"\[\[[1-6]\]\]", 36, avoid="["))
    results = smollm2.chat(convs, shaped)
    scores = [parse_score(r.text, 1, 6) for r in results]
    assert all(s is not None for s in scores), [r.text for r in results]
    for r in results:
        assert re.fullmatch(r"[^\[]*\[\[[1-6]\]\]", r.text) and r.completions[0].finish_reason == "stop"
    # the reasoning is the model's own greedy text until it wanted something the shape forbids (to end
    # before a verdict, or to write one elsewhere): the mask changes nothing before that
    free = smollm2.chat(convs, Sampling(max_tokens=48))
    for r, f in zip(results, free, strict=True):
        n = min(len(f.text), r.text.index("[[")) - 8
        assert n > 0 and r.text[:n] == f.text[:n]


@pytest.mark.slow
def test_smollm2_json_under_a_schema_parses_with_the_fields_asked(smollm2):
    conv = [[{"role": "user", "content": "Describe a fictional person as JSON with a name and an age."}]]
    (r,) = smollm2.chat(conv, Sampling(max_tokens=40, constraint=Constraint(json_schema=SCHEMA)))
    got = json.loads(r.text)
    assert set(got) == {"name", "age"} and isinstance(got["age"], int)


# ---------------------------------------------------------------- what the servers are sent
def test_the_openai_backend_sends_each_server_kind_its_own_fields():
    rx, ch, gr = Constraint(regex="a+"), Constraint(choice=["x", "y.z"]), Constraint(grammar='root ::= "a"')
    js = Constraint(json_schema=SCHEMA)
    strict_schema = {"name": "reply", "schema": SCHEMA, "strict": True}
    assert constraint_fields("openai", js) == {
        "response_format": {"type": "json_schema", "json_schema": strict_schema}
    }
    assert constraint_fields("openai", rx) is None and constraint_fields("openai", js, COMPLETE) is None
    assert constraint_fields("vllm", rx) == {"structured_outputs": {"regex": "a+"}}
    assert constraint_fields("vllm", ch) == {"structured_outputs": {"choice": ["x", "y.z"]}}
    assert constraint_fields("vllm", gr) == {"structured_outputs": {"grammar": 'root ::= "a"'}}
    assert constraint_fields("vllm", js, COMPLETE) == {"structured_outputs": {"json": SCHEMA}}
    assert constraint_fields("vllm-legacy", js) == {"guided_json": SCHEMA}
    assert constraint_fields("vllm-legacy", ch) == {"guided_choice": ["x", "y.z"]}
    assert constraint_fields("sglang", ch) == {"regex": r"(x|y\.z)"}
    assert constraint_fields("sglang", gr) == {"ebnf": 'root ::= "a"'}
    assert constraint_fields("sglang", js, COMPLETE) == {"json_schema": js.text}
    assert constraint_fields("none", js) is None

    backend = OpenAIBackend("m", "http://127.0.0.1:1/v1", structured_outputs="vllm")
    body = backend._sampling(Sampling(max_tokens=5, constraint=rx), CHAT)
    assert body["structured_outputs"] == {"regex": "a+"} and body["max_tokens"] == 5
    assert backend.enforces(rx) and not OpenAIBackend("m", "http://127.0.0.1:1/v1").enforces(rx)


def test_the_vllm_backend_builds_structured_output_params(monkeypatch):
    from dataflywheel.models.vllm import structured_params

    class Params:
        def __init__(self, **kw):
            self.kw = kw

    module = types.ModuleType("vllm.sampling_params")
    module.StructuredOutputsParams = Params
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", module)
    assert structured_params(None) == {}
    assert structured_params(Constraint(json_schema=SCHEMA))["structured_outputs"].kw == {"json": SCHEMA}
    assert structured_params(Constraint(choice=["a"]))["structured_outputs"].kw == {"choice": ["a"]}
    del module.StructuredOutputsParams  # vLLM before 0.12
    module.GuidedDecodingParams = Params
    assert structured_params(Constraint(regex="a"))["guided_decoding"].kw == {"regex": "a"}


# ---------------------------------------------------------------- a backend that cannot enforce
class Plain(Backend):
    capabilities = frozenset({CHAT})
    fingerprint = "plain"

    def __init__(self):
        self.seen: list[Sampling] = []

    def chat(self, conversations, sampling):
        self.seen.append(sampling)
        return [ChatResult([Completion("hi", "stop", 1)], 1) for _ in conversations]


def test_a_backend_that_cannot_enforce_gets_the_plain_request_counted_or_refuses_when_required():
    backend = Plain()
    model = Model(
        "m", ModelSpec(backend="openai", model="m", base_url="http://x", cache="off"), backend=backend
    )
    model.chat([[{"role": "user", "content": "a"}]] * 3, Sampling(constraint=Constraint(regex="a")))
    assert backend.seen[-1].constraint is None and model.usage.unconstrained == 3
    with pytest.raises(ModelError, match=r"cannot enforce a regex constraint.*constrained: auto"):
        model.chat(
            [[{"role": "user", "content": "a"}]], Sampling(constraint=Constraint(regex="a", required=True))
        )
    assert model.usage.requests == 3
