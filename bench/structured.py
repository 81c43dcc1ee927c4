"""Structured generation on the real SmolLM2-135M-Instruct: how often each op's reply can be read with its
shape off (the reference: free decoding and the parser) and on (llguidance masks, the same parser), on
the same prompts; the generation throughput it costs; and llguidance's mask time beside xgrammar's.

    python -m bench.structured --parse [--n 16]
    python -m bench.structured --throughput [--n 64] [--max-tokens 64]
    python -m bench.structured --masks

``--parse``: for each parsing op, ``n`` of its real prompts (AlpacaEval pairs, GSM8K, MMLU, XSTest), asked
greedily with the op's budget, once without and once with its shape: replies read, cut at max_tokens
(finish ``length``, never a value), and the ratio. ``--throughput``: 64 AlpacaEval judge prompts in
flight (one batch), free against the judge's shape ("[[k]]" after free reasoning): tokens per second
each, and the seconds spent computing masks and feeding tokens to the matchers. ``--masks``: the time of
one decoding step's masks for 64 rows under each kind of shape, llguidance (what the backend uses)
against xgrammar (vLLM's default) when it is installed (``pip install --no-deps xgrammar apache-tvm-ffi``).
"""

from __future__ import annotations

import argparse
import json
import time

from bench.common import SHARED, peak_rss_mib


# ---------------------------------------------------------------- the ops' prompts, readers and shapes
def tasks(n: int) -> list[dict]:
    """Each parsing op: name, conversations, reader (text -> value or None), shape, max_tokens."""
    from dataflywheel.evaluate.tasks import final_choice
    from dataflywheel.experiments.noise import read_mmlu
    from dataflywheel.models.constraint import Constraint
    from dataflywheel.ops import prompts
    from dataflywheel.ops.enhance import coachlm, llm2llm, robustft, toxicraft
    from dataflywheel.ops.evaluate import judge
    from dataflywheel.ops.evolve import evolve_eval, self_reward
    from dataflywheel.ops.parsing import (
        bracketed_score_shape,
        labelled_score_shape,
        letter_shape,
        parse_score,
        parse_verdict,
        problem_shape,
        verdict_shape,
    )
    from dataflywheel.ops.synthesize import cascade, knowledge_guided, magpie_tag

    def user(text: str) -> list[dict]:
        return [{"role": "user", "content": text}]

    pool = json.loads((SHARED / "alpaca_eval/annotations_alpaca_eval_gpt4/alpaca-7b.json").read_text())[:n]
    gsm = [json.loads(x) for x in (SHARED / "gsm8k/train.jsonl").read_text().splitlines()[:n]]
    mmlu = read_mmlu(SHARED / "mmlu_test" / "test", per_subject=2, subjects=-(-n // 2))[:n]
    xstest = [
        line.split(",")[1]
        for line in (SHARED / "xstest/xstest_prompts.csv").read_text().splitlines()[1 : n + 1]
    ]

    def fill(module, name: str, **values) -> str:
        return prompts.fill(prompts.load(module.__file__, name), **values)

    q_a = [(r["instruction"], r["output_1"]) for r in pool]
    single = [user(fill(judge, "judge_single.txt", question=q, answer=a)) for q, a in q_a]
    pairwise = [
        user(fill(judge, "judge_pairwise.txt", question=r["instruction"], answer_a=r["output_1"],
                  answer_b=r["output_2"]))
        for r in pool
    ]  # fmt: skip
    keys = ["category", "tone"]
    labels = ["benign", "harmful"]
    mc = [
        r["question"] + "\n" + "\n".join(f"{k}) {c}" for k, c in zip("ABCD", r["choices"], strict=True))
        for r in mmlu
    ]
    out = [
        ("judge single [[k]]", single, lambda t: parse_score(t, 1, 10),
         lambda m: bracketed_score_shape(1, 10, m), 96),
        ("judge pairwise [[A/B/C]]", pairwise, parse_verdict, verdict_shape, 96),
        ("self-reward Score: k", [self_reward.judge_prompt(q, a) for q, a in q_a], self_reward.judge_score,
         lambda m: labelled_score_shape("Score", 0, 5, m), 96),
        ("cascade rating", [user(fill(cascade, "cascade_judge.txt", question=q, answer=a)) for q, a in q_a],
         lambda t: parse_score(t, 1, 10), lambda m: bracketed_score_shape(1, 10, m), 64),
        ("toxicraft attributes", [user(toxicraft.attributes_prompt(x, keys)) for x in xstest],
         lambda t: toxicraft.parse_attributes(t, keys), lambda m: toxicraft.attributes_shape(keys), 64),
        ("toxicraft check", [user(prompts.fill(toxicraft._prompt("check"), labels=", ".join(labels), text=x))
                             for x in xstest],
         lambda t: toxicraft.parse_check(t, labels), lambda m: toxicraft.check_shape(labels), 48),
        ("evolve_eval Judgement", [user(fill(evolve_eval, "evolve_eval_verify.txt", question=r["question"],
                                             final=r["answer"].rsplit("####", 1)[1].strip())) for r in gsm],
         evolve_eval.parse_judgement, evolve_eval.judgement_shape, 96),
        ("llm2llm problem", [_llm2llm(llm2llm, r) for r in gsm], llm2llm.parse_problem, problem_shape, 128),
        ("coachlm pair", [user(f"{coachlm._meta()}\n\n{coachlm.pair_text(q, a)}") for q, a in q_a],
         lambda t: coachlm.parse_pair(coachlm.post_process(t)),
         lambda m: coachlm.CoachLM({"model": "m", "max_tokens": m}).shape(), 128),
        ("condor review", [user(fill(knowledge_guided, "condor_critique.txt", question=q, answer=a))
                           for q, a in q_a],
         knowledge_guided.parse_review, knowledge_guided.review_shape, 128),
        ("magpie difficulty tag",
         [user(fill(magpie_tag, "magpie_tag_difficulty.txt", query=q)) for q, _ in q_a],
         lambda t: magpie_tag.read_label(t, "difficulty"),
         lambda m: magpie_tag.MagpieTag({"model": "m", "tag": "difficulty", "max_tokens": m}).shape(), 64),
        ("robustft reasoned letter", [user(prompts.fill(robustft._prompt("reason"), question=q)) for q in mc],
         lambda t: final_choice(t, "ABCD"), lambda m: letter_shape("ABCD", m, reasoning=True), 96),
        ("evol equality", [user(fill(_evol(), "evol_equal.txt", first=q, second=q.lower())) for q, _ in q_a],
         _equal, lambda m: Constraint(choice=["Equal", "Not Equal"]), 4),
    ]  # fmt: skip
    return [
        {"name": name, "convs": convs, "read": read, "shape": shape(budget), "max_tokens": budget}
        for name, convs, read, shape, budget in out
    ]


def _llm2llm(module, row: dict) -> list[dict]:
    from dataflywheel.ops import prompts

    text = {f: prompts.load(module.__file__, f"llm2llm_{f}.txt").strip() for f in
            ("system", "example_user", "example_assistant", "user")}  # fmt: skip
    return [
        {"role": "system", "content": text["system"]},
        {"role": "user", "content": text["example_user"]},
        {"role": "assistant", "content": text["example_assistant"]},
        {
            "role": "user",
            "content": prompts.fill(text["user"], question=row["question"], answer=row["answer"]),
        },
    ]


def _evol():
    from dataflywheel.ops.synthesize import evol_instruct

    return evol_instruct


def _equal(text: str):
    from dataflywheel.ops.synthesize.evol_instruct import _verdict

    return _verdict(text)


def parse_rates(backend, n: int) -> None:
    from dataflywheel.models.base import Sampling

    print(
        f"parse rate on SmolLM2, {n} prompts per op, greedy; shape off (free + parser) | on (masked + parser)"
    )
    head = ["tokens", "read off", "cut off", "read on", "cut on", "s off", "s on"]
    widths = [6, 9, 8, 8, 7, 6, 6]
    print(f"{'op':28s} " + " ".join(f"{h:>{w}s}" for h, w in zip(head, widths, strict=True)))
    totals = [0, 0, 0]
    for task in tasks(n):
        line = []
        for shape in (None, task["shape"]):
            start = time.perf_counter()
            got = backend.chat(task["convs"], Sampling(max_tokens=task["max_tokens"], constraint=shape))
            seconds = time.perf_counter() - start
            cut = [r.error is None and r.completions[0].finish_reason == "length" for r in got]
            # read: the parser's value from a whole reply (a reply cut at max_tokens is never a value)
            read = sum(
                r.error is None and not c and task["read"](r.text or "") is not None
                for r, c in zip(got, cut, strict=True)
            )
            cut = sum(cut)
            line += [read, cut, seconds]
        totals[0] += len(task["convs"])
        totals[1] += line[0]
        totals[2] += line[3]
        print(
            f"{task['name']:28s} {task['max_tokens']:6d} {line[0]:4d}/{len(task['convs']):<4d} {line[1]:8d} "
            f"{line[3]:3d}/{len(task['convs']):<4d} {line[4]:7d} {line[2]:6.1f} {line[5]:6.1f}"
        )
    print(f"all: read off {totals[1]}/{totals[0]} ({totals[1] / totals[0]:.1%}), "
          f"on {totals[2]}/{totals[0]} ({totals[2] / totals[0]:.1%})")  # fmt: skip


def throughput(backend, n: int, max_tokens: int) -> None:
    from bench.common import alpaca_eval_pairs
    from dataflywheel.models import grammar
    from dataflywheel.models.base import Sampling
    from dataflywheel.ops import prompts
    from dataflywheel.ops.evaluate import judge
    from dataflywheel.ops.parsing import bracketed_score_shape

    template = prompts.load(judge.__file__, "judge_single.txt")
    convs = [
        [{"role": "user", "content": prompts.fill(template, question=q, answer=a)}]
        for q, a in alpaca_eval_pairs(n)
    ]
    backend.generate_rows = max(backend.generate_rows, n)  # every row in flight at once
    backend.generate_tokens = max(backend.generate_tokens, n * (max_tokens + 1024))
    backend.chat(convs[:2], Sampling(max_tokens=4))  # warm up
    rows = []
    for name, shape in (
        ("free (reference)", None),
        ("judge shape", bracketed_score_shape(1, 10, max_tokens)),
    ):
        before = dict(grammar.SECONDS)
        start = time.perf_counter()
        got = backend.chat(convs, Sampling(max_tokens=max_tokens, constraint=shape))
        seconds = time.perf_counter() - start
        tokens = sum(c.tokens for r in got for c in r.completions)
        spent = {k: grammar.SECONDS[k] - before[k] for k in before}
        rows.append((name, seconds, tokens, spent))
        print(f"{name:18s} {seconds:7.2f} s  {tokens:6d} tokens  {tokens / seconds:7.1f} tok/s  "
              f"masks {spent['mask']:.2f} s, feeding tokens {spent['consume']:.2f} s")  # fmt: skip
    (_, s0, t0, _), (_, s1, t1, spent) = rows
    per0, per1 = s0 / max(t0, 1), s1 / max(t1, 1)
    print(f"throughput constrained / free: {per0 / per1:.2f}x ({n} rows in flight, up to {max_tokens} "
          f"new tokens); grammar work {sum(spent.values()) / s1:.1%} of the constrained run; "
          f"peak RSS {peak_rss_mib():.0f} MiB")  # fmt: skip


def masks(backend) -> None:
    """One decoding step's masks for 64 rows: llguidance (the backend's) against xgrammar."""
    from dataflywheel.models.constraint import Constraint, ending_shape
    from dataflywheel.models.grammar import RowMatchers, ll_tokenizer

    rows = 64
    text = ("The answer is correct and complete, but it could explain more. " * 20).strip()
    ids = backend.encode(text)[:96]
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    shapes = {
        "ending [[k]]": ending_shape(r"\[\[[1-9]\]\]", 500, avoid="[").portable(),
        "parts [[k]]": ending_shape(r"\[\[[1-9]\]\]", 500, avoid="["),
        "free regex": Constraint(regex=r"[\s\S]{0,1000}"),
        "JSON schema": Constraint(json_schema=schema),
    }
    json_ids = backend.encode('{"label": "' + text[:200])
    lltok = ll_tokenizer(backend.tokenizer, backend._eos_ids())
    try:
        import xgrammar as xgr
    except ImportError:
        xgr = None
        print("xgrammar is not installed: pip install --no-deps xgrammar apache-tvm-ffi to compare")
    if xgr is not None:
        info = xgr.TokenizerInfo.from_huggingface(backend.tokenizer, vocab_size=len(backend.tokenizer))
        compiler = xgr.GrammarCompiler(info)
    print(f"{'shape':14s} {'llguidance ms/step':>19s} {'xgrammar ms/step':>17s}  (64 rows)")
    for name, shape in shapes.items():
        feed = json_ids if shape.json_schema else ids
        m = RowMatchers(lltok, shape, rows)
        start = time.perf_counter()
        for t in feed:
            m.allowed()
            m.consume([t] * rows)
        ll = (time.perf_counter() - start) / len(feed) * 1000
        xg = float("nan")
        if xgr is not None:
            grammar = (compiler.compile_json_schema(json.dumps(schema)) if shape.json_schema
                       else compiler.compile_regex(shape.portable().regex))  # fmt: skip
            matchers = [xgr.GrammarMatcher(grammar) for _ in range(rows)]
            bitmask = xgr.allocate_token_bitmask(rows, info.vocab_size)
            start = time.perf_counter()
            for t in feed:
                for i, x in enumerate(matchers):
                    x.fill_next_token_bitmask(bitmask, i)
                for x in matchers:
                    x.accept_token(t)
            xg = (time.perf_counter() - start) / len(feed) * 1000
        print(f"{name:14s} {ll:19.2f} {xg:17.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parse", action="store_true")
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--masks", action="store_true")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    everything = not (args.parse or args.throughput or args.masks)
    from dataflywheel.models.hf import HFBackend

    backend = HFBackend("embedded:smollm2-135m-instruct", device="cpu")
    if args.masks or everything:
        masks(backend)
    if args.parse or everything:
        parse_rates(backend, args.n or 16)
    if args.throughput or everything:
        throughput(backend, args.n or 64, args.max_tokens)


if __name__ == "__main__":
    main()
