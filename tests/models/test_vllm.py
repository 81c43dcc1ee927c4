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


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_vllm_enforces_each_kind_of_constraint():
    import json
    import re

    from dataflywheel.models.constraint import Constraint, ending_shape
    from dataflywheel.models.vllm import VLLMBackend

    convs = [[{"role": "user", "content": "Rate the sky's colour from 1 to 6, then give [[k]]."}]]
    vl = VLLMBackend("embedded:smollm2-135m-instruct", dtype="float32", gpu_memory_utilization=0.3)
    verdict = ending_shape(r"\[\[[1-6]\]\]", 30, avoid="[")
    (r,) = vl.chat(convs, Sampling(max_tokens=48, constraint=verdict))
    assert re.fullmatch(verdict.portable().regex, r.text)
    (r,) = vl.chat(convs, Sampling(max_tokens=8, constraint=Constraint(choice=["yes", "no"])))
    assert r.text in ("yes", "no")
    schema = {"type": "object", "properties": {"k": {"type": "integer"}}, "required": ["k"]}
    (r,) = vl.chat(convs, Sampling(max_tokens=32, constraint=Constraint(json_schema=schema)))
    assert isinstance(json.loads(r.text)["k"], int)


@pytest.mark.slow
def test_vllm_scores_the_tokens_hf_scores_even_with_no_context(smollm2, monkeypatch):
    """IFD's direct score on both backends: the vllm backend's prompts and its reading of vLLM's prompt
    log-probabilities (here from an engine that runs the same SmolLM2) equal the hf backend's numbers,
    for an empty context (the assistant header alone) as for a real one."""
    import sys
    import types

    import torch

    from dataflywheel.models.vllm import VLLMBackend

    class Engine:
        def generate(self, prompts, params, use_tqdm=False):
            outs = []
            for p in prompts:
                ids = p["prompt_token_ids"]
                with torch.no_grad():
                    logits = smollm2.model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
                steps = [None] + [
                    {ids[i]: types.SimpleNamespace(logprob=float(logits[i - 1, ids[i]]))}
                    for i in range(1, len(ids))
                ]
                outs.append(types.SimpleNamespace(prompt_logprobs=steps))
            return outs

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=lambda **kw: kw))
    vl = VLLMBackend.__new__(VLLMBackend)
    vl.tokenizer, vl.llm = smollm2.tokenizer, Engine()
    convs = [[], [{"role": "user", "content": "What is the capital of France?"}]]
    responses = ["Paris is the capital of France.", "Paris."]
    ours, theirs = vl.logprobs(convs, responses), smollm2.logprobs(convs, responses)
    for a, b in zip(ours, theirs, strict=True):
        assert len(a.logprobs) == len(b.logprobs)  # every response token scored, the first one too
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-3)
