"""Benchmark Self-Evolving with a scripted model: prefilter, the five operations, answers kept or rewritten,
verification (a no or an unreadable judgement drops the item), lineage."""

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.evolve.evolve_eval import EvolveEval, parse_item, parse_judgement
from tests.fakes import ScriptedBackend, context

SEEDS = [
    ("s0", "Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = 7\n#### 7"),
    ("s1", "A box holds 6 pens. How many pens are in 2 boxes?", "6 * 2 = 12\n#### 12"),
]


def seeds():
    return io.rows_to_table(
        [
            {S.ID: sid, S.MESSAGES: [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for sid, q, a in SEEDS
        ]
    )


def test_parsers():
    assert parse_item("Question: How many?\nAnswer: 2 + 2 = 4 #### 4", True) == {
        "question": "How many?",
        "answer": "2 + 2 = 4 #### 4",
    }
    assert parse_item("Question: How many?", True) is None  # a new answer is required
    assert parse_item("Question: How many?", False) == {"question": "How many?", "answer": ""}
    assert parse_judgement("Looks right.\nJudgement: yes") == {"ok": True}
    assert parse_judgement("Judgement: Yes ... wait. Judgement: no") == {"ok": False}
    assert parse_judgement("fine") is None


def agents(solve_s1=True, reject=(), unreadable=()):
    def reply(conv):
        text = conv[-1]["content"]
        if text.startswith("You write new test items"):
            op = next(
                o
                for o in ("Rewrite", "Add one", "Change one", "Keep the situation", "Ask a harder")
                if o in text
            )
            seed = "s0" if "Tom" in text else "s1"
            if op in ("Rewrite", "Add one"):
                return f"Question: [{op}] {seed} problem"
            return f"Question: [{op}] {seed} problem\nAnswer: work #### 99"
        if text.startswith("Check a test item"):
            item = text.split("Problem:\n")[1].split("\n\n")[0]
            if any(r in item for r in unreadable):
                return "I am not sure."
            return "Judgement: no" if any(r in item for r in reject) else "It checks out.\nJudgement: yes"
        # prefilter: the generator answers the original problem
        if "Tom" in text:
            return "3 + 4 = 7. The answer is 7."
        return "#### 12" if solve_s1 else "#### 10"

    return ScriptedBackend(default=reply)


def test_every_operation_on_every_solved_seed_with_the_right_answers():
    op = EvolveEval({"model": "m"}, ctx=context(m=agents()))
    made = list(op.generate(seeds()))
    assert len(made) == 10
    by_op = {}
    for r in made:
        by_op.setdefault(r["evolve_op"], []).append(r)
        seed = r[S.PARENTS][0]
        assert r[S.MESSAGES][0]["content"].endswith(f"{seed} problem")
    for r in by_op["paraphrase"] + by_op["add_noise"]:  # the answer must not change
        assert r[S.MESSAGES][1]["content"] == dict((s, a) for s, _, a in SEEDS)[r[S.PARENTS][0]]
    for r in by_op["reverse_polarity"] + by_op["complex_question"]:
        assert r[S.MESSAGES][1]["content"] == "work #### 99"


def test_prefilter_and_verification_drop_items():
    lm = agents(solve_s1=False, reject=("[Rewrite]",), unreadable=("[Ask a harder]",))
    op = EvolveEval({"model": "m"}, ctx=context(m=lm))
    made = list(op.generate(seeds()))
    assert {r[S.PARENTS][0] for r in made} == {"s0"} and op.stats["prefiltered_out"] == 1
    assert sorted(r["evolve_op"] for r in made) == ["add_noise", "alternative_question", "reverse_polarity"]
    assert op.stats["rejected:paraphrase"] == 1 and op.stats["unverified"] == 1
    verify = [c[-1]["content"] for c in lm.calls if c[-1]["content"].startswith("Check a test item")]
    assert any("Given final answer: 7" in v for v in verify) and any(
        "Given final answer: 99" in v for v in verify
    )


def test_a_separate_verifier_and_no_prefilter():
    gen, ver = agents(solve_s1=False), agents(reject=("s1",))
    op = EvolveEval(
        {"model": "g", "verifier": "v", "prefilter": False, "operations": ["paraphrase"]},
        ctx=context(g=gen, v=ver),
    )
    made = list(op.generate(seeds()))
    assert [r[S.PARENTS] for r in made] == [["s0"]]
    assert not any(c[-1]["content"].startswith("Check a test item") for c in gen.calls)


def probe_agents(verifier_accepts_everything=False):
    """Probes: the generator asks "[op] about sN?" answered "RIGHT-sN", the option model writes
    "WRONG-sN"; the verifier accepts RIGHT answers and rejects WRONG ones (or accepts everything)."""

    def reply(conv):
        text = conv[-1]["content"]
        seed = "s0" if "Tom" in text else "s1"
        if text.startswith("You write new test items"):
            op = next(o for o in ("stated in the problem", "how to solve", "does not state") if o in text)
            return f"Question: [{op}] about {seed}?\nAnswer: RIGHT-{seed}\nmore text"
        if text.startswith("Here is a math word problem"):
            return f"Wrong answer: WRONG-{seed}"
        if text.startswith("Check an answer"):
            proposed = text.split("Proposed answer: ")[1].split("\n")[0]
            ok = verifier_accepts_everything or proposed.startswith("RIGHT")
            return "Judgement: yes" if ok else "Judgement: no"
        raise AssertionError(f"unexpected prompt: {text[:60]}")

    return ScriptedBackend(default=reply)


def test_sub_ability_probes_are_two_way_choices_verified_twice():
    from dataflywheel.evaluate.tasks import choice_letter

    lm = probe_agents()
    ops = ["retrieval", "planning", "knowledge"]
    op = EvolveEval({"model": "m", "operations": ops, "prefilter": False}, ctx=context(m=lm))
    made = list(op.generate(seeds()))
    assert sorted((r[S.PARENTS][0], r["evolve_op"]) for r in made) == sorted(
        (s, o) for s in ("s0", "s1") for o in ops
    )
    letters = []
    for r in made:
        ask, answer = r[S.MESSAGES][0]["content"], r[S.MESSAGES][1]["content"]
        seed = r[S.PARENTS][0]
        assert ask.startswith(dict((s, q) for s, q, _ in SEEDS)[seed])  # the problem, then the probe
        assert ask.rstrip().endswith("Answer with A or B.")
        letter = choice_letter(answer)
        letters.append(letter)
        right = ask.split(f"\n{letter}) ")[1].split("\n")[0]
        assert right == f"RIGHT-{seed}"  # only the answer's first line, and at the letter it names
        other = "B" if letter == "A" else "A"
        assert ask.split(f"\n{other}) ")[1].split("\n")[0] == f"WRONG-{seed}"
    assert set(letters) == {"A", "B"}  # the right answer's place varies with the seed and probe
    assert all(op.stats[f"made:{o}"] == 2 for o in ops)
    # each probe was verified twice: its right answer, then its wrong option
    checks = [c[-1]["content"] for c in lm.calls if c[-1]["content"].startswith("Check an answer")]
    assert len(checks) == 12 and sum("Proposed answer: WRONG" in c for c in checks) == 6

    # a verifier that also accepts the wrong option cannot tell them apart: nothing is kept
    op = EvolveEval(
        {"model": "m", "operations": ["planning"], "prefilter": False},
        ctx=context(m=probe_agents(verifier_accepts_everything=True)),
    )
    assert list(op.generate(seeds())) == [] and op.stats["wrong_option_accepted:planning"] == 2


def test_accuracy_by_evolve_op_on_the_rows_that_reach_the_step(tmp_path):
    import pyarrow.parquet as pq

    from dataflywheel.ops import registry
    from dataflywheel.ops.evolve.evolve_eval import probe_row

    rows = [
        {
            S.ID: "s0",
            S.MESSAGES: [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "#### 7"}],
        },
        {
            S.ID: "s1",
            S.MESSAGES: [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "#### 12"}],
        },
        {
            S.ID: "p0",
            S.MESSAGES: [{"role": "user", "content": "q0 para"}, {"role": "assistant", "content": "#### 7"}],
            "evolve_op": "paraphrase",
        },
        {S.ID: "k0", S.MESSAGES: probe_row("q0", "which?", "right", "wrong", "k0"), "evolve_op": "knowledge"},
        {
            S.ID: "k1",
            S.MESSAGES: probe_row("q1", "which?", "right", "wrong", "k1x"),
            "evolve_op": "knowledge",
        },
    ]
    pq.write_table(io.rows_to_table(rows), tmp_path / "shard-00000.parquet")
    want = {r[S.ID]: r[S.MESSAGES][1]["content"] for r in rows}

    def candidate(conv):  # right on both seeds and on k0 only; wrong on the paraphrase
        q = conv[-1]["content"]
        if q == "q0":
            return "7"
        if q == "q1":
            return "The answer is 12."
        if q.startswith("q0 para"):
            return "8"
        key = "k0" if q.startswith("q0") else "k1"
        right = want[key][-3]
        return f"The answer is ({right if key == 'k0' else ('B' if right == 'A' else 'A')})."

    op = registry.get("eval_accuracy")(
        {"model": "m", "task": "auto", "by": "evolve_op"}, context(m=ScriptedBackend(default=candidate))
    )
    op.inputs = [tmp_path / "shard-00000.parquet"]
    got = op.evaluate()
    assert got["rows"] == 5 and got["accuracy"] == 0.6
    assert (got["accuracy:original"], got["rows:original"]) == (1.0, 2)
    assert (got["accuracy:paraphrase"], got["rows:paraphrase"]) == (0.0, 1)
    assert (got["accuracy:knowledge"], got["rows:knowledge"]) == (0.5, 2)
