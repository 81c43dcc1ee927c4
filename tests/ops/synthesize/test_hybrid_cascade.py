import itertools

import pytest

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.lib.answers import final_answer
from dataflywheel.ops.synthesize.cascade import Cascade
from dataflywheel.ops.synthesize.hybrid import HybridGenerate, choose_strategy
from tests.fakes import ScriptedBackend, context


def seeds(n):
    return io.rows_to_table(
        [{S.ID: f"q{i}", S.MESSAGES: [{"role": "user", "content": f"What is {i} + {i}?"}]} for i in range(n)]
    )


def teacher():
    count = itertools.count()

    def reply(conv):
        text = conv[-1]["content"]
        if text.startswith("Rephrase"):
            return "Rephrased: " + text.rsplit("Question:\n", 1)[1]
        if text.startswith("Here are some example"):
            return f"New question {next(count)}?"
        return "Step by step... Final: " + text.rsplit("Question:\n", 1)[1]

    return ScriptedBackend(default=reply)


@pytest.mark.parametrize(
    "ratio, strategy",
    [
        (0.5, "answer_augmentation"),
        (1.9, "answer_augmentation"),
        (2, "question_rephrase"),
        (8, "new_question"),
    ],
)
def test_the_strategy_follows_the_budget_to_seed_ratio(ratio, strategy):
    assert choose_strategy(ratio, 2.0, 8.0) == strategy


def test_answer_augmentation_spends_one_query_a_row_over_the_seeds():
    b = teacher()
    op = HybridGenerate({"model": "t", "queries_per_seed": 1.5}, ctx=context(t=b))
    rows = list(op.generate(seeds(4)))
    # floor(1.5 x 4) = 6 answers; the two seeds answered twice are asked once each with n = 2
    assert len(rows) == 6 and op.stats["replies"] == 6 == op.stats["teacher_queries"] and len(b.calls) == 4
    assert [r[S.PARENTS] for r in rows] == [["q0"], ["q1"], ["q2"], ["q3"], ["q0"], ["q1"]]
    assert rows[0][S.MESSAGES][0]["content"] == "What is 0 + 0?"  # the real question, a new answer
    assert all(r["hybrid_strategy"] == "answer_augmentation" for r in rows)


def test_rephrase_and_new_questions_spend_two_queries_a_row():
    b = teacher()
    op = HybridGenerate({"model": "t", "queries_per_seed": 3}, ctx=context(t=b))
    rows = list(op.generate(seeds(2)))
    assert op.strategy == "question_rephrase" and len(rows) == 3 and op.stats["replies"] == 6
    assert rows[0][S.MESSAGES][0]["content"] == "Rephrased: What is 0 + 0?" and rows[0][S.PARENTS] == ["q0"]
    b = teacher()
    op = HybridGenerate({"model": "t", "queries_per_seed": 8, "examples": 2}, ctx=context(t=b))
    rows = list(op.generate(seeds(2)))
    assert op.strategy == "new_question" and len(rows) == 8 and op.stats["teacher_queries"] == 16
    assert len({r[S.MESSAGES][0]["content"] for r in rows}) == 8  # each a sample of its own
    assert all(r[S.PARENTS] == ["q0", "q1"] for r in rows)


def test_final_answer_extraction():
    assert final_answer("so 3 + 4 = 7.\nThe answer is 1,234.0", "last_number") == "1234"
    assert final_answer("no digits", "last_number") is None
    assert final_answer("Reasoning\n\n  The answer:  Paris ", "last_line") == "the answer: paris"


def drafter(good: set[int]):
    """Consistent and right on the questions in `good`; on the others every sample says something else."""
    count = itertools.count()

    def reply(conv):
        i = int(conv[-1]["content"].split()[2])
        return f"It is {2 * i}." if i in good else f"Maybe {next(count)}."

    return ScriptedBackend(default=reply)


def test_the_cascade_escalates_only_the_inconsistent_drafts():
    t = ScriptedBackend(default=lambda conv: f"Teacher says {2 * int(conv[-1]['content'].split()[2])}.")
    op = Cascade({"model": "d", "teacher": "t", "samples": 3}, ctx=context(d=drafter({0, 2, 3}), t=t))
    out = op.map(seeds(5)).to_pylist()
    assert [r["cascade_source"] for r in out] == ["drafter", "teacher", "drafter", "drafter", "teacher"]
    assert [r[S.MESSAGES][-1]["content"] for r in out] == [
        "It is 0.",
        "Teacher says 2.",
        "It is 4.",
        "It is 6.",
        "Teacher says 8.",
    ]
    assert [r["cascade_check"] for r in out] == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert op.stats["teacher_calls"] == 2 == len(t.calls) and op.stats["kept_drafts"] == 3
    # every answer is right: the same quality as asking the teacher for all five, at 2 teacher calls of 5
    assert all(
        final_answer(r[S.MESSAGES][-1]["content"], "last_number") == str(2 * i) for i, r in enumerate(out)
    )


def test_the_judge_check_and_an_unread_rating_escalate():
    grades = {"0": "Rating: [[9]]", "1": "Rating: [[3]]", "2": "I cannot rate this."}

    def judge(conv):
        return grades[conv[-1]["content"].split("What is ", 1)[1][0]]

    t = ScriptedBackend(default="Teacher answer.")
    op = Cascade(
        {"model": "d", "teacher": "t", "check": "judge", "judge": "j"},
        ctx=context(d=ScriptedBackend(default="Draft answer."), t=t, j=ScriptedBackend(default=judge)),
    )
    out = op.map(seeds(3)).to_pylist()
    assert [r["cascade_source"] for r in out] == ["drafter", "teacher", "teacher"]
    assert [r["cascade_check"] for r in out] == [9.0, 3.0, None]
    assert op.stats["check_unread"] == 1 and op.stats["teacher_calls"] == 2


def test_a_failed_teacher_call_is_recorded_on_the_row():
    op = Cascade(
        {"model": "d", "teacher": "t", "samples": 2},
        ctx=context(d=drafter(set()), t=ScriptedBackend(default=None)),
    )
    out = op.map(seeds(1)).to_pylist()
    assert out[0]["cascade_source"] is None and "request failed" in out[0]["error_cascade"]
    assert out[0][S.MESSAGES] == [{"role": "user", "content": "What is 0 + 0?"}]
