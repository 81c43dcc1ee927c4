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
