"""`flywheel serve` as a real server on 127.0.0.1, and the openai backend against it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from dataflywheel.models.base import Sampling
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


def client(url) -> OpenAIBackend:
    os.environ["SERVE_TEST_KEY"] = KEY
    return OpenAIBackend("smol", url, api_key_env="SERVE_TEST_KEY", max_retries=1, timeout_s=120)


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
