"""Generation: the hf backend's batched, length-sorted, left-padded generation against a one-at-a-time
`model.generate` loop, on the same AlpacaEval prompts with the real SmolLM2-135M-Instruct (greedy).

    python -m bench.hf_generate [--n 64] [--max-tokens 64] [--batch-size 16]
    python -m bench.hf_generate --few-shot [--n 32] [--max-tokens 48]
    python -m bench.hf_generate --precision [--n 64] [--max-tokens 64]
    python -m bench.hf_generate --decode-steps

``--few-shot``: prompts that share a long prefix, Self-Instruct's instance-generation template (its
demonstrations, then the task) filled with the human seed tasks (../shared/data/self_instruct): the
backend with its shared prefix prefilled once against the same backend prefilling every prompt whole.

``--precision``: the same backend decoding with its fp32 weights (the reference) against a bf16 copy
(``generate_dtype``: what ``auto`` picks on a CPU with native bf16), on the same prompts: speed, the
answers that come out identical, and the fp32 model's mean NLL of each side's answers (a change of
precision that hurt the answers would show there). Without ``--precision`` the backend decodes as
``auto`` picks; the header says which.

``--decode-steps``: the time of one decoding step (one new token per row against a cache of random
tokens, the first row left-padded) for fp32 SDPA (the reference), bf16 SDPA, bf16 eager and bf16 with
the backend's grouped decoding attention, and the largest logit difference of grouped against SDPA in
fp32 (exactness).
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import alpaca_eval_pairs, peak_rss_mib
from dataflywheel.models.base import Sampling
from dataflywheel.models.hf import HFBackend, native_cpu_bf16


def one_at_a_time(backend: HFBackend, convs, max_tokens: int) -> tuple[list[str], int]:
    texts, tokens = [], 0
    tok = backend.tokenizer
    for conv in convs:
        ids = tok.apply_chat_template(conv, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = backend.generator.generate(
                **ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id
            )
        new = out[0, ids["input_ids"].shape[1] :].tolist()
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
        tokens += len(new)
        texts.append(tok.decode(new, skip_special_tokens=True))
    return texts, tokens


def few_shot(backend: HFBackend, n: int, max_tokens: int) -> None:
    import json

    from bench.common import SHARED
    from dataflywheel.ops import prompts
    from dataflywheel.ops.synthesize import self_instruct

    template = prompts.load(self_instruct.__file__, "self_instruct_input_first.txt")
    seeds = [json.loads(line) for line in (SHARED / "self_instruct" / "seed_tasks.jsonl").open()][:n]
    convs = [
        [{"role": "user", "content": prompts.fill(template, instruction=s["instruction"])}] for s in seeds
    ]
    sampling = Sampling(max_tokens=max_tokens, stop=["\nTask:"])
    backend.chat(convs[:2], sampling)  # warm up
    encoded = [backend.encode(backend.render(c)) for c in convs]
    timings = {}
    for name, least in (("whole prompts (ref)", 10**9), ("shared prefix once", HFBackend.SHARED_PREFIX_MIN)):
        backend.SHARED_PREFIX_MIN = least
        start = time.perf_counter()
        timings[name] = (backend.chat(convs, sampling), time.perf_counter() - start)
    (ref, t_ref), (ours, t_ours) = timings.values()
    print(
        f"{n} few-shot prompts ({min(map(len, encoded))}-{max(map(len, encoded))} tokens, "
        f"{backend._shared_prefix(encoded, 1)} shared), greedy, max {max_tokens} new tokens "
        f"(SmolLM2-135M, decoding in {backend.generate_dtype}, {torch.get_num_threads()} threads)"
    )
    print(f"{'':24} {'seconds':>8} {'new tokens':>11} {'tokens/s':>9}")
    for name, (results, seconds) in timings.items():
        made = sum(r.completions[0].tokens for r in results)
        print(f"{name:24} {seconds:8.2f} {made:11d} {made / seconds:9.1f}")
    same = sum(a.text == b.text for a, b in zip(ref, ours, strict=True))
    print(
        f"identical completions: {same}/{n}; speed-up {t_ref / t_ours:.2f}x; "
        f"peak RSS {peak_rss_mib():.0f} MiB"
    )


def precision(n: int, max_tokens: int) -> None:
    import numpy as np

    fp32 = HFBackend("embedded:smollm2-135m-instruct", device="cpu", generate_dtype="float32")
    bf16 = fp32.generating_with("bfloat16")  # the same loaded weights, decoding with a bf16 copy
    convs = [[{"role": "user", "content": q}] for q, _ in alpaca_eval_pairs(n)]
    sampling = Sampling(max_tokens=max_tokens)
    rows = {}
    for name, backend in (("fp32 weights (ref)", fp32), ("bf16 copy", bf16)):
        backend.chat(convs[:2], sampling)  # warm up (and build the copy)
        start = time.perf_counter()
        results = backend.chat(convs, sampling)
        seconds = time.perf_counter() - start
        texts = [r.text for r in results]
        scored = fp32.logprobs(convs, [t or " " for t in texts])
        nll = float(np.mean([s.mean_nll for s in scored if s.mean_nll is not None]))
        rows[name] = (texts, seconds, sum(r.completions[0].tokens for r in results), nll)
    print(
        f"{n} AlpacaEval prompts, greedy, max {max_tokens} new tokens (SmolLM2-135M, "
        f"{torch.get_num_threads()} threads, native bf16: {native_cpu_bf16()})"
    )
    print(f"{'':20} {'seconds':>8} {'new tokens':>11} {'tokens/s':>9} {'fp32 NLL of answers':>20}")
    for name, (_, seconds, made, nll) in rows.items():
        print(f"{name:20} {seconds:8.2f} {made:11d} {made / seconds:9.1f} {nll:20.4f}")
    (ref, t_ref, m_ref, _), (ours, t_ours, m_ours, _) = rows.values()
    same = sum(a == b for a, b in zip(ref, ours, strict=True))
    print(
        f"identical completions: {same}/{n}; speed-up (tokens/s) {(m_ours / t_ours) / (m_ref / t_ref):.2f}x; "
        f"peak RSS {peak_rss_mib():.0f} MiB (both copies)"
    )


def decode_steps() -> None:
    from transformers import AutoModelForCausalLM

    from dataflywheel.models import embedded, hf

    hf._register_grouped_decode()
    path = str(embedded.resolve("embedded:smollm2-135m-instruct"))
    shapes = ((4, 100), (16, 400), (64, 100))
    configs = (
        ("fp32 sdpa (ref)", torch.float32, "sdpa"),
        ("bf16 sdpa", torch.bfloat16, "sdpa"),
        ("bf16 eager", torch.bfloat16, "eager"),
        ("bf16 grouped", torch.bfloat16, hf.GROUPED_DECODE),
    )
    print(f"one decoding step, ms (SmolLM2-135M, {torch.get_num_threads()} threads)")
    print(f"{'':18}" + "".join(f"{f'{r} rows x {c}':>16}" for r, c in shapes))
    logits = {}
    for name, dtype, attn in configs + (("fp32 grouped", torch.float32, hf.GROUPED_DECODE),):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn).eval()
        cells = []
        for rows, ctx in shapes:
            torch.manual_seed(0)
            ids = torch.randint(100, 5000, (rows, ctx))
            mask = torch.ones_like(ids)
            mask[0, :10] = 0
            best = float("inf")
            with torch.inference_mode():
                for _ in range(2):
                    cache = hf.cache_of(model(input_ids=ids, attention_mask=mask, use_cache=True))
                    grown = mask
                    start = 0.0
                    for step in range(7):  # the first step warms up
                        if step == 1:
                            start = time.perf_counter()
                        grown = torch.cat([grown, torch.ones(rows, 1, dtype=mask.dtype)], 1)
                        out = model(input_ids=ids[:, -1:], attention_mask=grown, past_key_values=cache)
                    best = min(best, (time.perf_counter() - start) / 6 * 1000)
                    if dtype == torch.float32 and rows == 4:
                        logits[attn] = out.logits.float()
            cells.append(best)
        if name != "fp32 grouped":
            print(f"{name:18}" + "".join(f"{c:16.1f}" for c in cells))
    diff = (logits["sdpa"] - logits[hf.GROUPED_DECODE]).abs().max().item()
    print(f"fp32 grouped against fp32 sdpa, largest logit difference after 7 steps: {diff:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--few-shot", action="store_true", help="prompts sharing a long prefix (see above)")
    ap.add_argument("--precision", action="store_true", help="fp32 against bf16 decoding (see above)")
    ap.add_argument("--decode-steps", action="store_true", help="one decoding step per attention (see above)")
    args = ap.parse_args()
    if args.decode_steps:
        return decode_steps()
    if args.precision:
        return precision(args.n, args.max_tokens)
    if args.few_shot:
        backend = HFBackend("embedded:smollm2-135m-instruct", device="cpu")
        return few_shot(backend, args.n, args.max_tokens)
    backend = HFBackend("embedded:smollm2-135m-instruct", device="cpu", batch_size=args.batch_size)
    convs = [[{"role": "user", "content": q}] for q, _ in alpaca_eval_pairs(args.n)]
    sampling = Sampling(max_tokens=args.max_tokens)
    backend.chat(convs[:2], sampling)  # warm up

    start = time.perf_counter()
    ref_texts, ref_tokens = one_at_a_time(backend, convs, args.max_tokens)
    t_ref = time.perf_counter() - start
    start = time.perf_counter()
    results = backend.chat(convs, sampling)
    t_ours = time.perf_counter() - start
    tokens = sum(r.completions[0].tokens for r in results)
    same = sum(a == r.text for a, r in zip(ref_texts, results, strict=True))
    print(
        f"{args.n} prompts, greedy, max {args.max_tokens} new tokens, batch {args.batch_size} "
        f"(SmolLM2-135M, decoding in {backend.generate_dtype}, {torch.get_num_threads()} threads)"
    )
    print(f"{'':24} {'seconds':>8} {'new tokens':>11} {'tokens/s':>9}")
    print(f"{'one at a time (ref)':24} {t_ref:8.2f} {ref_tokens:11d} {ref_tokens / t_ref:9.1f}")
    print(f"{'batched hf backend':24} {t_ours:8.2f} {tokens:11d} {tokens / t_ours:9.1f}")
    print(f"identical completions: {same}/{args.n}")
    print(
        f"speed-up (tokens/s): {(tokens / t_ours) / (ref_tokens / t_ref):.2f}x (target >= 3x); "
        f"peak RSS {peak_rss_mib():.0f} MiB"
    )


if __name__ == "__main__":
    main()
