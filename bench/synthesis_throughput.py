"""Generation throughput of the synthesis path: the `magpie` op (one raw-text request with n completions
for the instructions, batched greedy responses) against the same conversations made one at a time with
transformers' ``generate`` (batch 1: sample an instruction from the pre-query template, then answer it),
on the embedded SmolLM2, same sampling settings, same machine, one run. Throughput is generated tokens
(instructions + responses) per second; rows per second is printed too.

    python -m bench.synthesis_throughput [--rows 32] [--instruction-tokens 48] [--response-tokens 64]
"""

from __future__ import annotations

import argparse
import time

from bench.common import peak_rss_mib


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--instruction-tokens", type=int, default=48)
    ap.add_argument("--response-tokens", type=int, default=64)
    args = ap.parse_args()
    import torch

    from dataflywheel.data import io
    from dataflywheel.data import schema as S
    from dataflywheel.models import template
    from dataflywheel.models.client import Model
    from dataflywheel.models.hf import HFBackend
    from dataflywheel.ops.base import OpContext
    from dataflywheel.ops.synthesize.magpie import Magpie
    from dataflywheel.recipe.models import ModelSpec

    backend = HFBackend("embedded:smollm2-135m-instruct", device="cpu")
    tok, model = backend.tokenizer, backend.generator  # the weights the backend decodes with
    pre = template.pre_query(tok)
    eos = sorted(backend._eos_ids())

    # one at a time: what a loop over `generate` does
    torch.manual_seed(0)
    start = time.perf_counter()
    one_tokens = one_rows = 0
    for _ in range(args.rows):
        ids = torch.tensor([tok.encode(pre, add_special_tokens=False)])
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_p=1.0,
                max_new_tokens=args.instruction_tokens, eos_token_id=eos, pad_token_id=tok.pad_token_id,
                stop_strings=["\n"], tokenizer=tok,
            )  # fmt: skip
        new = out[0, ids.shape[1] :]
        one_tokens += len(new)
        text = tok.decode(new, skip_special_tokens=True).strip()
        if not text:
            continue
        conv = tok.encode(template.render(tok, [{"role": "user", "content": text}]), add_special_tokens=False)
        ids = torch.tensor([conv])
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False,
                max_new_tokens=args.response_tokens, eos_token_id=eos, pad_token_id=tok.pad_token_id,
            )  # fmt: skip
        one_tokens += out.shape[1] - ids.shape[1]
        one_rows += 1
    t_one = time.perf_counter() - start

    spec = ModelSpec(backend="hf", model="embedded:smollm2-135m-instruct", cache="off")
    m = Model("m", spec, backend=backend)
    op = Magpie(
        {"model": "m", "max_tokens": args.instruction_tokens, "response_max_tokens": args.response_tokens,
         "per_seed": args.rows, "seed": 0},
        ctx=OpContext(models={"m": m}),
    )  # fmt: skip
    seeds = io.rows_to_table([{S.ID: "slot", S.MESSAGES: [{"role": "user", "content": "x"}]}])
    start = time.perf_counter()
    rows = list(op.generate(seeds))
    t_ours = time.perf_counter() - start
    ours_tokens = m.usage.completion_tokens

    print(f"{args.rows} Magpie conversations, instructions <= {args.instruction_tokens} tokens (T=1), greedy "
          f"responses <= {args.response_tokens} tokens, SmolLM2-135M on CPU")  # fmt: skip
    print(
        f"one at a time (ref) {t_one:7.1f} s  {one_rows:3d} rows  {one_tokens / t_one:6.1f} tokens/s  "
        f"{one_rows / t_one:5.2f} rows/s"
    )
    print(
        f"magpie op           {t_ours:7.1f} s  {len(rows):3d} rows  {ours_tokens / t_ours:6.1f} tokens/s  "
        f"{len(rows) / t_ours:5.2f} rows/s"
    )
    print(
        f"throughput {(ours_tokens / t_ours) / (one_tokens / t_one):.1f}x in tokens/s, "
        f"{(len(rows) / t_ours) / max(one_rows / t_one, 1e-9):.1f}x in rows/s (target >= 6x); "
        f"peak RSS {peak_rss_mib():,.0f} MiB"
    )


if __name__ == "__main__":
    main()
