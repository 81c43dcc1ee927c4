from __future__ import annotations

import multiprocessing as mp

import numpy as np

from dataflywheel.models.base import EMBED, Backend, ChatResult, Completion, LogprobResult, Sampling
from dataflywheel.models.cache import CallCache
from dataflywheel.models.client import Model
from dataflywheel.recipe.models import ModelSpec


class CountingBackend(Backend):
    """Deterministic stand-in counting what reaches it (control flow only; real models are tested apart)."""

    capabilities = frozenset({"chat", "logprobs", EMBED})

    def __init__(self):
        self.calls = 0

    @property
    def fingerprint(self) -> str:
        return "counting-v1"

    def chat(self, conversations, sampling):
        self.calls += len(conversations)
        return [
            ChatResult([Completion(c[-1]["content"][::-1], "stop", 3)], prompt_tokens=5)
            if c[-1]["content"] != "x"
            else ChatResult(error="refused")
            for c in conversations
        ]

    def logprobs(self, conversations, responses):
        self.calls += len(responses)
        return [LogprobResult([-1.0] * len(r)) for r in responses]

    def embed(self, texts):
        self.calls += len(texts)
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def model(tmp_path, mode="read_write", **spec):
    s = ModelSpec(backend="openai", model="m", base_url="http://127.0.0.1:1/v1", cache=mode, **spec)
    return Model("m", s, CallCache(tmp_path / "c.sqlite", mode), CountingBackend())


def convs(*texts):
    return [[{"role": "user", "content": t}] for t in texts]


def test_deterministic_requests_are_served_from_the_cache(tmp_path):
    m = model(tmp_path, price_per_m_input=1.0, price_per_m_output=2.0)
    first = m.chat(convs("abc", "de", "x"))
    assert [r.text for r in first] == ["cba", "ed", None] and first[2].error == "refused"
    assert m.backend.calls == 3 and m.usage.failed == 1 and m.usage.prompt_tokens == 10
    assert m.usage.cost == (10 * 1.0 + 6 * 2.0) / 1e6
    again = m.chat(convs("abc", "de", "x"))
    assert [r.text for r in again] == ["cba", "ed", None]
    assert m.backend.calls == 4  # only the failed request is asked again
    assert m.usage.cached == 2 and m.usage.prompt_tokens == 10  # cached answers add no tokens
    m.chat(convs("abc"), Sampling(temperature=0.7))  # unseeded sampling is never cached
    m.chat(convs("abc"), Sampling(temperature=0.7))
    assert m.backend.calls == 6
    m.chat(convs("abc"), Sampling(temperature=0.7, seed=1))
    m.chat(convs("abc"), Sampling(temperature=0.7, seed=1))
    assert m.backend.calls == 7


def test_logprobs_and_embeddings_are_cached(tmp_path):
    m = model(tmp_path)
    m.logprobs(convs("q"), ["resp"])
    assert m.logprobs(convs("q"), ["resp"])[0].logprobs == [-1.0] * 4
    vecs = m.embed(["ab", "abc"])
    np.testing.assert_array_equal(m.embed(["ab", "abc"]), vecs)
    assert m.backend.calls == 1 + 2


def test_cache_modes(tmp_path):
    m = model(tmp_path, "read_write")
    m.chat(convs("abc"))
    ro = model(tmp_path, "read_only")
    ro.chat(convs("abc", "new"))
    assert ro.backend.calls == 1  # read the old answer, asked for the new one
    assert len(CallCache(tmp_path / "c.sqlite")) == 1  # and wrote nothing
    off = model(tmp_path, "off")
    off.chat(convs("abc"))
    assert off.backend.calls == 1


def _writer(path, worker):
    cache = CallCache(path)
    for i in range(50):
        cache.put_many({f"{worker}-{i}-{j}": {"v": [worker, i, j]} for j in range(4)})


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "c.sqlite"
    CallCache(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    cache = CallCache(path)
    assert len(cache) == 4 * 50 * 4
    assert cache.get_many(["3-49-3"]) == {"3-49-3": {"v": [3, 49, 3]}}
