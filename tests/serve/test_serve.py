"""`flywheel serve` as a real server on 127.0.0.1, and the openai backend against it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import httpx
import numpy as np
import orjson
import pytest

from dataflywheel.models.base import Sampling
from dataflywheel.models.constraint import Constraint, ending_shape
from dataflywheel.models.openai import OpenAIBackend
from tests.conftest import ROOT
from tests.fault_server import free_port

pytestmark = pytest.mark.slow
KEY = "test-key-123"


@pytest.fixture(scope="module")
def served():
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dataflywheel.cli",
            "serve",
            "embedded:smollm2-135m-instruct",
            "--port",
            str(port),
            "--api-key",
            KEY,
            "--embedder",
            "embedded:all-minilm-l6-v2",
            "--name",
            "smol",
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(proc.stdout.read().decode())
        time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("flywheel serve did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def client(url, structured_outputs: str = "openai") -> OpenAIBackend:
    os.environ["SERVE_TEST_KEY"] = KEY
    return OpenAIBackend(
        "smol",
        url,
        api_key_env="SERVE_TEST_KEY",
        max_retries=1,
        timeout_s=120,
        structured_outputs=structured_outputs,
    )


CONVS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name three fruits."}],
]


def test_models_endpoint_and_api_key(served):
    assert httpx.get(f"{served}/models").status_code == 401
    data = httpx.get(f"{served}/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert data["data"][0]["id"] == "smol"
    assert set(data["data"][0]["capabilities"]) == {"chat", "logprobs", "embed", "complete"}


def test_chat_through_the_server_equals_in_process(served, smollm2):
    remote = client(served).chat(CONVS, Sampling(max_tokens=20))
    local = smollm2.chat(CONVS, Sampling(max_tokens=20))
    assert [r.text for r in remote] == [r.text for r in local]
    assert remote[0].prompt_tokens == local[0].prompt_tokens
    assert remote[0].completions[0].tokens == local[0].completions[0].tokens


def test_raw_completions_through_the_server_equal_in_process(served, smollm2):
    """/v1/completions continues raw text (Magpie's pre-query template), as the in-process model does."""
    prompts = ["<|im_start|>user\n", "The capital of France is"]
    remote = client(served).complete(prompts, Sampling(max_tokens=12))
    local = smollm2.complete(prompts, Sampling(max_tokens=12))
    assert [r.text for r in remote] == [r.text for r in local] and all(r.text for r in remote)
    assert remote[0].prompt_tokens == local[0].prompt_tokens
    (r,) = client(served).complete(prompts[:1], Sampling(max_tokens=8, temperature=1.0, n=3, seed=5))
    assert len(r.completions) == 3 and r.error is None


def test_chat_options_n_seed_stop_logprobs(served):
    (r,) = client(served).chat(CONVS[:1], Sampling(max_tokens=8, temperature=0.8, n=2, seed=3, logprobs=True))
    assert len(r.completions) == 2 and r.error is None
    assert all(len(c.logprobs) > 0 and c.token_strs for c in r.completions)
    (s,) = client(served).chat(CONVS[1:], Sampling(max_tokens=40, stop=["\n"]))
    assert "\n" not in s.text


def test_response_logprobs_through_the_server_equal_in_process(served, smollm2):
    responses = ["Paris.", "Apple, banana and cherry."]
    remote = client(served).logprobs(CONVS, responses)
    local = smollm2.logprobs(CONVS, responses)
    for a, b in zip(remote, local, strict=True):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)


def test_embeddings_through_the_server(served, minilm):
    texts = ["bread baking", "how to bake bread", "stock market"]
    np.testing.assert_allclose(client(served).embed(texts), minilm.embed(texts), atol=1e-5)


HEADERS = {"Authorization": f"Bearer {KEY}"}


def sse(lines) -> list[dict | str]:
    """The data of each server-sent event ("[DONE]" as the string)."""
    out = []
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


def test_streamed_chat_is_the_chat_text_with_usage_and_done(served, smollm2):
    body = {
        "messages": CONVS[1],
        "max_tokens": 20,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{served}/chat/completions", json=body, headers=HEADERS, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse(r.iter_lines())
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    (ref,) = smollm2.chat([CONVS[1]], Sampling(max_tokens=20))
    assert text == ref.text and len(chunks) > 5  # token by token, not one piece
    assert chunks[-1]["choices"][0]["finish_reason"] == ref.completions[0].finish_reason
    assert events[-2]["usage"]["completion_tokens"] == ref.completions[0].tokens


def test_64_concurrent_clients_some_leaving_mid_stream(served, smollm2):
    """8 long streamed requests read to the end and 8 long ones whose client leaves after three pieces;
    once they decode, 48 short requests (half of them streamed). Every finished answer is the in-process
    text; the short ones are not held up by the long ones (whole-request batching runs them after); the
    abandoned ones stop decoding; nothing is left over."""

    prompts = [
        "What is the capital of France?",
        "Name three fruits.",
        "Write a haiku about the sea.",
        "Translate 'good morning' into Spanish.",
        "Give me one tip for sleeping better.",
        "What is 12 times 7?",
        "Describe a bicycle in one sentence.",
        "Write a 500-word story about a dragon who learns to bake bread.",
    ]
    short_ref = [
        r.text
        for r in smollm2.chat([[{"role": "user", "content": p}] for p in prompts], Sampling(max_tokens=8))
    ]
    long_ref = [
        r.text
        for r in smollm2.chat([[{"role": "user", "content": p}] for p in prompts], Sampling(max_tokens=64))
    ]
    before = httpx.get(served.removesuffix("/v1") + "/health").json()

    async def one(http, kind: str, k: int, t0: float):
        p = prompts[k % len(prompts)]
        tokens = 8 if kind.startswith("short") else 64
        body = {"messages": [{"role": "user", "content": p}], "max_tokens": tokens, "temperature": 0}
        if kind == "short":
            r = await http.post(f"{served}/chat/completions", json=body)
            assert r.status_code == 200
            answer = r.json()["choices"][0]
            return kind, k, answer["message"]["content"], time.monotonic() - t0, answer["finish_reason"]
        text, pieces, finish = "", 0, None
        async with http.stream("POST", f"{served}/chat/completions", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                choice = orjson.loads(line[6:])["choices"][0]
                delta, finish = choice["delta"].get("content", ""), choice["finish_reason"]
                text, pieces = text + delta, pieces + bool(delta)
                if kind == "leave" and pieces == 3:  # leaving closes the stream: the client is gone
                    return kind, k, None, time.monotonic() - t0, None
        return kind, k, text, time.monotonic() - t0, finish

    async def main():
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=0)
        t0 = time.monotonic()
        async with httpx.AsyncClient(headers=HEADERS, timeout=300, limits=limits) as http:
            kinds = ["long"] * 8 + ["leave"] * 8
            longs = [asyncio.create_task(one(http, kind, k, t0)) for k, kind in enumerate(kinds)]
            await asyncio.sleep(1.0)  # the long ones are in; now the short ones come
            kinds = ["short", "short-stream"] * 24
            shorts = await asyncio.gather(*(one(http, kind, 16 + k, t0) for k, kind in enumerate(kinds)))
            return shorts + list(await asyncio.gather(*longs))

    results = asyncio.run(main())
    assert len(results) == 64
    for kind, k, text, _, _ in results:
        if kind.startswith("short"):
            assert text == short_ref[k % len(prompts)], (kind, k)
        elif kind == "long":
            assert text == long_ref[k % len(prompts)], (kind, k)
    short = sorted(s for kind, _, _, s, _ in results if kind.startswith("short"))
    full = [s for kind, _, _, s, finish in results if kind == "long" and finish == "length"]
    assert len(full) >= 2  # the story prompt runs to its 64 tokens
    assert short[-1] < min(full)  # every short answer ended before any long one that ran its 64 tokens
    assert short[-1] < 60
    deadline = time.time() + 30
    while True:
        health = httpx.get(served.removesuffix("/v1") + "/health").json()
        if health["running"] == 0 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert health["continuous_batching"] is True
    assert (health["running"], health["waiting"]) == (0, 0)
    assert health["cancelled"] - before["cancelled"] == 8
    assert health["completed"] - before["completed"] == 56


def test_output_constraints_through_the_server_are_those_of_the_in_process_model(served, smollm2):
    """flywheel serve is a structured-output server: each server kind's fields reach its decoder, and the
    constrained answers equal the in-process model's under the same constraint."""
    verdict = ending_shape(r"\[\[[1-6]\]\]", 20, avoid="[").portable()  # the regex servers are sent
    person = Constraint(
        json_schema={
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 20}},
            "required": ["name"],
            "additionalProperties": False,
        }
    )
    yes_no = Constraint(choice=["yes", "no"])
    for kind, constraint in [
        ("vllm", verdict),
        ("sglang", verdict),
        ("vllm-legacy", yes_no),
        ("openai", person),
    ]:
        sampling = Sampling(max_tokens=32, constraint=constraint)
        remote = client(served, kind).chat(CONVS, sampling)
        local = smollm2.chat(CONVS, sampling)
        assert [r.error for r in remote] == [None, None]
        assert [r.text for r in remote] == [r.text for r in local], kind
        for r in remote:
            if constraint.json_schema:
                assert isinstance(orjson.loads(r.text)["name"], str)
            else:
                assert re.fullmatch(constraint.regex or constraint.choice_regex(), r.text), (kind, r.text)
    (r,) = client(served, "vllm").complete(["The sky is"], Sampling(max_tokens=8, constraint=yes_no))
    assert r.text in ("yes", "no")


def test_a_bad_constraint_is_a_400_naming_the_field_and_the_server_keeps_serving(served):
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"messages": CONVS[0], "max_tokens": 4}
    for extra, field in [
        ({"structured_outputs": {"regex": "[a-"}}, "structured_outputs.regex"),
        ({"guided_json": "{not json"}, "guided_json"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format"),
        ({"regex": "a", "guided_choice": ["b"]}, "one output constraint at most"),
    ]:
        resp = httpx.post(f"{served}/chat/completions", json={**body, **extra}, headers=headers, timeout=60)
        assert resp.status_code == 400, extra
        assert field in resp.json()["error"]["message"]
    ok = httpx.post(f"{served}/chat/completions", json=body, headers=headers, timeout=60)
    assert ok.status_code == 200
