from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.enhance.llm2llm import LLM2LLM, parse_problem
from tests.fakes import ScriptedBackend, context


def table():
    rows = [
        {
            S.ID: f"s{i}",
            S.MESSAGES: [
                {"role": "user", "content": f"Tom has {i} apples and gets {i} more. How many?"},
                {"role": "assistant", "content": f"{i} + {i} = {2 * i} #### {2 * i}"},
            ],
        }
        for i in range(1, 5)
    ]
    # a synthetic row from an earlier round: never augmented, even when the student gets it wrong
    rows.append(
        {
            S.ID: "x1",
            S.PARENTS: ["s1"],
            S.MESSAGES: [
                {"role": "user", "content": "Ann has 9 pens and gets 9 more. How many?"},
                {"role": "assistant", "content": "#### 18"},
            ],
        }
    )
    return io.rows_to_table(rows)  # fmt: skip


def test_answers_and_problems_parse_as_the_paper_reads_them():
    assert parse_problem("Question: Sam has 3 cats and 2 dogs. How many pets?\nAnswer: 3 + 2 = 5 #### 5") == (
        "Sam has 3 cats and 2 dogs. How many pets?", "3 + 2 = 5 #### 5"
    )  # fmt: skip
    assert parse_problem("Question: Draw a graph of 3 points.\nAnswer: ... #### 3") is None  # banned word
    assert parse_problem("Question: How many?\nAnswer: no final number") is None
    assert parse_problem("Here is a problem: 3 + 2") is None


def student(conv):
    """Right on 2 and 4 apples, wrong on the rest (and on the synthetic row)."""
    n = int(conv[-1]["content"].split()[2])
    return f"#### {2 * n}" if n in (2, 4) else "#### 0"


def teacher(conv):
    q = conv[-1]["content"].split("Question: ", 1)[1].split("\n", 1)[0]
    return f"Question: A new problem like '{q}'\nAnswer: work #### 7"


def test_only_wrong_seeds_get_a_new_problem_and_the_set_grows():
    t = ScriptedBackend(default=teacher)
    op = LLM2LLM({"model": "t", "student": "s"}, ctx=context(t=t, s=ScriptedBackend(default=student)))
    rows = list(op.generate(table()))
    assert op.stats["seeds"] == 4 and op.stats["seeds_wrong"] == 2 and op.stats["problems_added"] == 2
    assert [r[S.PARENTS] for r in rows] == [["s1"], ["s3"]]
    assert rows[0][S.MESSAGES][0]["content"].startswith("A new problem like 'Tom has 1 apples")
    assert rows[0][S.MESSAGES][1]["content"] == "work #### 7"
    # the teacher saw the system rules, the worked example, then the seed and its solution
    conv = t.calls[0]
    assert [m["role"] for m in conv] == ["system", "user", "assistant", "user"]
    assert "1 + 1 = 2 #### 2" in conv[-1]["content"]


def test_an_unparsable_problem_is_counted_and_dropped():
    op = LLM2LLM(
        {"model": "t", "student": "s"},
        ctx=context(t=ScriptedBackend(default="I cannot think of one."), s=ScriptedBackend(default="#### 0")),
    )
    assert list(op.generate(table())) == [] and op.stats["problem_unread"] == 4
