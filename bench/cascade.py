"""What the drafter/teacher cascade saves: teacher calls and money against asking the teacher for every
row, on the same questions, and the quality of the result (final answers against the references).

The drafter is the embedded SmolLM2; the teacher is an OpenAI-compatible server on loopback that answers
with the reference solution at a price (a stand-in for an expensive API that is always right, so the
all-teacher run is the quality ceiling). Two question sets: GSM8K test questions (hard for a 135M
drafter) and two-number additions (easy for it): the saving depends on how often the drafter is
self-consistent, and the quality on how often it is consistently wrong.

    python -m bench.cascade [--n 32] [--samples 4] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import random
import time

from bench.common import SHARED, peak_rss_mib


def questions(kind: str, n: int) -> list[tuple[str, str]]:
    if kind == "gsm8k":
        rows = [json.loads(line) for line in open(SHARED / "gsm8k" / "test.jsonl")][:n]
        return [(r["question"], r["answer"]) for r in rows]
    rng = random.Random(0)
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        out.append((f"What is {a} + {b}? Answer with the number.", f"{a} + {b} = {a + b}"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    from dataflywheel.data import io
    from dataflywheel.lib.answers import final_answer
    from dataflywheel.models.client import Model
    from dataflywheel.models.hf import HFBackend
    from dataflywheel.models.openai import OpenAIBackend
    from dataflywheel.ops.base import OpContext
    from dataflywheel.ops.core.generate import Generate
    from dataflywheel.ops.synthesize.cascade import Cascade
    from dataflywheel.recipe.models import ModelSpec
    from tests.fault_server import ServerThread, priced_teacher_app

    drafter = HFBackend("embedded:smollm2-135m-instruct", device="cpu")
    for kind in ("gsm8k", "addition"):
        qa = questions(kind, args.n)
        server = ServerThread(priced_teacher_app({q: a for q, a in qa}, 150, 200)).start()
        try:
            teacher_spec = ModelSpec(
                backend="openai", model="teacher", base_url=server.url, cache="off",
                price_per_m_input=2.5, price_per_m_output=10.0,
            )  # fmt: skip

            def models(spec=teacher_spec, url=server.url):
                return {
                    "d": Model("d", ModelSpec(backend="hf", model="x", cache="off"), backend=drafter),
                    "t": Model("t", spec, backend=OpenAIBackend("teacher", url)),
                }

            table = io.rows_to_table(
                [{"id": f"q{i}", "messages": [{"role": "user", "content": q}]} for i, (q, _) in enumerate(qa)]
            )
            truth = [final_answer(a, "last_number") for _, a in qa]

            ms = models()
            start = time.perf_counter()
            every = Generate({"model": "t"}, ctx=OpContext(models=ms)).map(table).to_pylist()
            t_all, all_usage = time.perf_counter() - start, ms["t"].usage
            ms = models()
            op = Cascade(
                {
                    "model": "d",
                    "teacher": "t",
                    "samples": args.samples,
                    "max_tokens": args.max_tokens,
                    "seed": 0,
                },
                ctx=OpContext(models=ms),
            )
            start = time.perf_counter()
            out = op.map(table).to_pylist()
            t_cascade, usage = time.perf_counter() - start, ms["t"].usage

            def accuracy(rows, truth=truth):
                got = [final_answer(r["messages"][-1]["content"], "last_number") for r in rows]
                return sum(g == w for g, w in zip(got, truth, strict=True)) / len(rows)

            kept = [r for r in out if r["cascade_source"] == "drafter"]
            kept_right = sum(
                final_answer(r["messages"][-1]["content"], "last_number") == truth[int(r["id"][1:])]
                for r in kept
            )
            print(f"{kind}: {len(qa)} questions, drafter SmolLM2-135M ({args.samples} samples, "
                  f"<= {args.max_tokens} tokens), teacher on loopback at $2.5/$10 per M tokens")  # fmt: skip
            print(f"  all teacher  {all_usage.requests:3d} teacher calls  ${all_usage.cost:.4f}  "
                  f"accuracy {accuracy(every):.2f}  {t_all:6.1f} s")  # fmt: skip
            print(f"  cascade      {usage.requests:3d} teacher calls  ${usage.cost:.4f}  "
                  f"accuracy {accuracy(out):.2f}  {t_cascade:6.1f} s  "
                  f"(drafts kept {len(kept)}, of them right {kept_right})")  # fmt: skip
            saved = 1 - usage.requests / max(all_usage.requests, 1)
            money = 1 - usage.cost / all_usage.cost if all_usage.cost else 0.0
            print(f"  saving: {saved:.0%} of teacher calls, {money:.0%} of teacher money; "
                  f"quality {accuracy(out) - accuracy(every):+.2f}")  # fmt: skip
        finally:
            server.stop()
    print(f"peak RSS {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
