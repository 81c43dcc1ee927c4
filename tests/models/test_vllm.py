from __future__ import annotations

import importlib.util

import pytest

from dataflywheel.models.base import ModelError, Sampling


def test_vllm_without_a_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from dataflywheel.models.vllm import VLLMBackend

    with pytest.raises(ModelError, match="needs a CUDA GPU"):
        VLLMBackend("embedded:smollm2-135m-instruct")


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_vllm_matches_hf_greedy_and_scores_like_hf(smollm2):
    from dataflywheel.models.hf import HFBackend
    from dataflywheel.models.vllm import VLLMBackend

    convs = [[{"role": "user", "content": "What is the capital of France?"}]]
    vl = VLLMBackend("embedded:smollm2-135m-instruct", dtype="float32", gpu_memory_utilization=0.3)
    hf = HFBackend("embedded:smollm2-135m-instruct", device="cuda", dtype="float32")
    assert vl.chat(convs, Sampling(max_tokens=16))[0].text == hf.chat(convs, Sampling(max_tokens=16))[0].text
    a, b = vl.logprobs(convs, ["Paris."])[0].logprobs, hf.logprobs(convs, ["Paris."])[0].logprobs
    assert a == pytest.approx(b, abs=1e-3)
