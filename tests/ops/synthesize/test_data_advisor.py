"""Data Advisor's loop with the scripted model. Harmful text stays out of the fixtures: every query is a
placeholder."""

import itertools

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.synthesize.data_advisor import DataAdvisor, parse_summary
from tests.fakes import ScriptedBackend, context

SEEDS = [f"[placeholder harmful request {i}]" for i in range(5)]


def seeds():
    return io.rows_to_table(
        [{S.ID: f"s{i}", S.MESSAGES: [{"role": "user", "content": t}]} for i, t in enumerate(SEEDS)]
    )


def advisor(summary_ok=True):
    issues = itertools.count(1)
    queries = itertools.count(1)

    def reply(conv):
        text = conv[-1]["content"]
        if text.startswith("A safety dataset"):
            return f"issue {next(issues)}\nmore text"
        if text.startswith("Here are requests"):
            issue = text.split("about: ", 1)[1].split(".", 1)[0]
            return f"[placeholder query {next(queries)} on {issue}]"
        if text.startswith("Here is a list"):
            lines = [x[2:] for x in text.split("\n\n")[1].splitlines()]
            new = text.split("A new kind of harm: ", 1)[1].split("\n", 1)[0]
            return "\n".join(f"- {x}" for x in [*lines, new]) + ("\n---" if summary_ok else "")
        return "I can't help with that, but here is safe information instead."

    return ScriptedBackend(default=reply)


def test_parse_summary_needs_its_closing_line():
    assert parse_summary("- medical\n- legal\n---\nextra") == ["medical", "legal"]
    assert parse_summary("- medical\n- legal") is None
    assert parse_summary("---") is None


def test_rounds_grow_the_summary_add_one_exemplar_each_and_answer_every_query():
    b = advisor()
    op = DataAdvisor(
        {"model": "m", "rounds": 3, "per_round": 4, "categories": ["medical", "legal"]}, ctx=context(m=b)
    )
    rows = list(op.generate(seeds()))
    assert len(rows) == 12
    assert [r["advisor_issue"] for r in rows] == ["issue 1"] * 4 + ["issue 2"] * 4 + ["issue 3"] * 4
    assert [r["advisor_summary_size"] for r in rows[::4]] == [3, 4, 5]  # the summary grows by one a round
    assert op.stats["exemplars_added"] == 3 and op.stats["summary_lines"] == 5
    for r in rows:
        assert r[S.MESSAGES][0]["content"].startswith("[placeholder query")
        assert r[S.MESSAGES][1]["content"].startswith("I can't help with that")
        assert r[S.PARENTS] and set(r[S.PARENTS]) <= {f"s{i}" for i in range(5)}
    # each query prompt showed 3 exemplars; from round 2 on, the pool holds one query per round
    query_prompts = [c[-1]["content"] for c in b.calls if c[-1]["content"].startswith("Here are requests")]
    assert len(query_prompts) == 12 and all(
        p.count("\n1. ") + p.count("\n2. ") + p.count("\n3. ") == 3 for p in query_prompts
    )
    # exemplars shown in round r include at most one query of each earlier round, never a later one
    made = [r[S.MESSAGES][0]["content"] for r in rows]
    for rnd in (1, 2, 3):
        shown = {q for q in made if any(q in p for p in query_prompts[4 * (rnd - 1) : 4 * rnd])}
        earlier = made[: 4 * (rnd - 1)]
        assert shown <= set(earlier)
        assert all(sum(q in shown for q in earlier[4 * k : 4 * k + 4]) <= 1 for k in range(rnd - 1))
    # the round's issue reached the summary prompt
    summary_prompts = [c[-1]["content"] for c in b.calls if c[-1]["content"].startswith("Here is a list")]
    assert "- issue 1" in summary_prompts[1] and "A new kind of harm: issue 2" in summary_prompts[1]


def test_an_unfinished_summary_keeps_the_old_one_and_is_counted():
    op = DataAdvisor(
        {"model": "m", "rounds": 2, "per_round": 2, "categories": ["medical"]},
        ctx=context(m=advisor(summary_ok=False)),
    )
    rows = list(op.generate(seeds()))
    assert len(rows) == 4 and op.stats["summary_unread"] == 2
    assert [r["advisor_summary_size"] for r in rows] == [1, 1, 1, 1]


def test_the_responder_is_a_separate_model():
    responder = ScriptedBackend(default="A safe, careful answer.")
    op = DataAdvisor(
        {"model": "m", "responder": "safe", "rounds": 1, "per_round": 2},
        ctx=context(m=advisor(), safe=responder),
    )
    rows = list(op.generate(seeds()))
    assert [r[S.MESSAGES][1]["content"] for r in rows] == ["A safe, careful answer."] * 2
    assert len(responder.calls) == 2
