"""The hf backend on the real embedded SmolLM2-135M-Instruct."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataflywheel.models.base import Sampling

pytestmark = pytest.mark.slow

CONVS = [
    [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a primary color."}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Count from one to five in words."},
    ],
]


def test_chat_template_and_greedy_generation(smollm2):
    prompt = smollm2.render(CONVS[0])
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    results = smollm2.chat(CONVS, Sampling(max_tokens=24))
    assert "Paris" in results[0].text
    for r in results:
        (c,) = r.completions
        assert r.error is None and c.text.strip() and c.finish_reason in ("stop", "length")
        assert 0 < c.tokens <= 24 and r.prompt_tokens > 10
    assert "one" in results[2].text.lower()
    again = smollm2.chat(CONVS, Sampling(max_tokens=24))
    assert [r.text for r in again] == [r.text for r in results]  # greedy is deterministic


def test_batched_generation_matches_one_at_a_time(smollm2):
    batched = [r.text for r in smollm2.chat(CONVS, Sampling(max_tokens=16))]
    single = [smollm2.chat([c], Sampling(max_tokens=16))[0].text for c in CONVS]
    assert batched == single


def test_sampling_n_seed_stop_and_logprobs(smollm2):
    s = Sampling(max_tokens=12, temperature=0.9, n=3, seed=7, logprobs=True)
    (r,) = smollm2.chat(CONVS[:1], s)
    assert len(r.completions) == 3
    assert [c.text for c in smollm2.chat(CONVS[:1], s)[0].completions] == [c.text for c in r.completions]
    for c in r.completions:
        assert len(c.logprobs) == c.tokens and all(lp <= 0 for lp in c.logprobs)
    (stopped,) = smollm2.chat(CONVS[2:], Sampling(max_tokens=30, stop=["three"]))
    assert "three" not in stopped.text.lower() and stopped.completions[0].finish_reason == "stop"


def manual_logprobs(backend, conv, response):
    """Independent computation: one full forward pass, log-softmax, prompt positions masked."""
    prompt_ids, resp_ids = backend.split_ids(conv, response)
    ids = torch.tensor([prompt_ids + resp_ids])
    labels = ids.clone()
    labels[0, : len(prompt_ids)] = -100
    with torch.no_grad():
        logits = backend.model(ids).logits[0, :-1].float()
    targets = labels[0, 1:]
    lp = logits.log_softmax(-1)
    keep = targets != -100
    return lp[keep].gather(1, targets[keep][:, None]).squeeze(1).tolist()


def test_logprobs_equal_a_manual_forward_pass(smollm2):
    responses = [
        "Paris.",
        "Blue is a primary color, and so are red and yellow.",
        "One, two, three, four, five.",
    ]
    got = smollm2.logprobs(CONVS, responses)
    for conv, resp, r in zip(CONVS, responses, got, strict=True):
        want = manual_logprobs(smollm2, conv, resp)
        assert len(r.logprobs) == len(want) == len(smollm2.split_ids(conv, resp)[1])
        np.testing.assert_allclose(r.logprobs, want, atol=1e-4)
    # the mean NLL is the response-only cross-entropy the trainers minimise
    ids_p, ids_r = smollm2.split_ids(CONVS[0], responses[0])
    ids = torch.tensor([ids_p + ids_r])
    labels = ids.clone()
    labels[0, : len(ids_p)] = -100
    with torch.no_grad():
        loss = smollm2.model(ids, labels=labels).loss.item()
    assert got[0].mean_nll == pytest.approx(loss, abs=1e-4)


def test_logprobs_without_context_and_bad_inputs(smollm2):
    with_ctx, no_ctx, empty = smollm2.logprobs([CONVS[0], [], CONVS[0]], ["Paris.", "Paris.", ""])
    assert len(no_ctx.logprobs) == len(with_ctx.logprobs)
    assert with_ctx.mean_nll < no_ctx.mean_nll  # the question makes the answer easier
    assert empty.logprobs is None and empty.error == "empty response"


def test_hidden_state_embeddings(smollm2):
    vecs = smollm2.embed(
        ["The cat sat on the mat.", "A cat was sitting on a mat.", "Stock prices fell sharply."]
    )
    assert vecs.shape == (3, 576) and vecs.dtype == np.float32
    last = smollm2.embed(["The cat sat on the mat."], pooling="last")
    assert not np.allclose(last[0], vecs[0])


FEW_SHOT = "Come up with an answer for the task.\n\n" + "".join(
    f"Task: Write the number {i} in words.\nOutput: the number {i} spelled out.\n\n" for i in range(10)
)
TASKS = ["Name a color.", "What is 2+2?", "List three fruits.", "Give a synonym for happy."]


def test_a_shared_prompt_prefix_is_prefilled_once_with_the_same_answers(smollm2, monkeypatch):
    """Prompts that start alike (a few-shot template, n samples of one prompt) have their common prefix
    prefilled once: the model sees it in one row, the rows only their own tokens, and the answers, their
    log-probabilities and seeded samples are those of prompts prefilled whole."""
    convs = [[{"role": "user", "content": FEW_SHOT + "Task: " + t}] for t in TASKS]
    prompts = [smollm2.encode(smollm2.render(c)) for c in convs]
    shared = smollm2._shared_prefix(prompts, 1)
    # the longest common prefix: every prompt has it, and they differ at the next token
    assert all(p[:shared] == prompts[0][:shared] for p in prompts) and len({p[shared] for p in prompts}) > 1
    assert shared > 150
    assert smollm2._shared_prefix(prompts[:1], 1) == 0  # a lone prompt has nothing to share
    seen = []
    hook = smollm2.generator.register_forward_pre_hook(
        lambda m, args, kw: seen.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        greedy = Sampling(max_tokens=12, logprobs=True)
        batched = smollm2.chat(convs, greedy)
    finally:
        hook.remove()
    width = max(len(p) for p in prompts)
    assert seen[:2] == [(1, shared), (4, width - shared)] and set(seen[2:]) == {(4, 1)}
    single = [smollm2.chat([c], greedy)[0] for c in convs]
    assert [r.text for r in batched] == [r.text for r in single]
    for a, b in zip(batched, single, strict=True):
        assert np.allclose(a.completions[0].logprobs, b.completions[0].logprobs, atol=1e-4)
    sample = Sampling(max_tokens=10, temperature=1.0, n=3, seed=11)
    shared_samples = [c.text for r in smollm2.chat(convs[:2], sample) for c in r.completions]
    monkeypatch.setattr(smollm2, "SHARED_PREFIX_MIN", 10**9)
    whole_samples = [c.text for r in smollm2.chat(convs[:2], sample) for c in r.completions]
    assert shared_samples == whole_samples and len(set(shared_samples)) > 1


def test_generation_decodes_with_bf16_weights_and_scoring_keeps_fp32(smollm2, smollm2_bf16):
    """`generate_dtype: bfloat16`: an fp32 model decodes with a bf16 copy of its weights and grouped-query
    decoding attention; its greedy answers are those of transformers' own bf16 model (eager attention),
    while log-probabilities still come from the fp32 weights."""
    from transformers import AutoModelForCausalLM

    from dataflywheel.models import hf

    assert smollm2.model.dtype == torch.float32
    bf16 = smollm2_bf16
    gen = bf16.generator
    assert gen is bf16.generator and gen is not bf16.model and gen.dtype == torch.bfloat16
    assert gen.config._attn_implementation == hf.GROUPED_DECODE
    assert smollm2.model.config._attn_implementation == "sdpa"
    for (name, w), (_, w16) in zip(smollm2.model.named_parameters(), gen.named_parameters(), strict=True):
        assert torch.equal(w.to(torch.bfloat16), w16), name
    assert bf16.fingerprint != smollm2.fingerprint  # their answers never share a cache entry

    reference = AutoModelForCausalLM.from_pretrained(
        smollm2.path, dtype=torch.bfloat16, attn_implementation="eager"
    ).eval()
    calls = {"bf16": 0, "fp32": 0}
    for conv in CONVS:
        ids = torch.tensor([smollm2.encode(smollm2.render(conv))])
        with torch.inference_mode():
            out = reference.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False,
                pad_token_id=smollm2.tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None,
            )  # fmt: skip
        want = smollm2.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        hooks = [
            m.register_forward_pre_hook(lambda *_, k=k, c=calls: c.__setitem__(k, c[k] + 1))
            for k, m in (("bf16", gen), ("fp32", smollm2.model))
        ]
        try:
            assert bf16.chat([conv], Sampling(max_tokens=16))[0].text == want
        finally:
            for h in hooks:
                h.remove()
        assert calls["bf16"] > 1 and calls["fp32"] == 0
    # the prefill's last positions reach the LM head contiguous (a strided view made torch copy the head)
    seen = []
    head = gen.get_output_embeddings()
    hook = head.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous()))
    try:
        bf16.chat(CONVS, Sampling(max_tokens=2))
    finally:
        hook.remove()
    assert seen == [True, True]
    # scoring is untouched: the fp32 forward pass, to 1e-4
    got = bf16.logprobs(CONVS[:1], ["Paris."])[0].logprobs
    np.testing.assert_allclose(got, manual_logprobs(smollm2, CONVS[0], "Paris."), atol=1e-4)


def test_generate_dtype_choice():
    from dataflywheel.models import hf

    assert hf.pick_generate_dtype("auto", torch.float32, "cpu") == torch.float32  # exact by default
    assert hf.pick_generate_dtype("auto", torch.bfloat16, "cuda") == torch.bfloat16
    assert hf.pick_generate_dtype("bfloat16", torch.float32, "cpu") == torch.bfloat16
    with pytest.raises(hf.ModelError, match="unknown dtype 'int4'"):
        hf.pick_generate_dtype("int4", torch.float32, "cpu")


def test_grouped_decode_attention_equals_sdpa_with_padding(smollm2):
    """The grouped decoding kernel is exact attention: in fp32, a decoding step over a left-padded cache
    gives SDPA's logits to 1e-4 (prefill goes to SDPA itself)."""
    import copy

    from dataflywheel.models import hf

    hf._register_grouped_decode()
    grouped = copy.deepcopy(smollm2.model)
    grouped.set_attn_implementation(hf.GROUPED_DECODE)
    torch.manual_seed(0)
    ids = torch.randint(100, 5000, (3, 40))
    mask = torch.ones_like(ids)
    mask[0, :9] = mask[1, :3] = 0
    step = torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype)], 1)
    logits = []
    with torch.inference_mode():
        for model in (smollm2.model, grouped):
            cache = hf.cache_of(model(input_ids=ids, attention_mask=mask, use_cache=True))
            kw = {smollm2._cache_kwarg(): cache}
            logits.append(model(input_ids=ids[:, -1:], attention_mask=step, **kw).logits.float())
    assert (logits[0] - logits[1]).abs().max().item() < 1e-4
