import pytest

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.synthesize.evol_instruct import IN_DEPTH, EvolInstruct, elimination
from tests.fakes import ScriptedBackend, context


def seeds(texts):
    return io.rows_to_table(
        [{S.ID: f"s{i}", S.MESSAGES: [{"role": "user", "content": t}]} for i, t in enumerate(texts)]
    )


def test_elimination_rules_follow_the_paper():
    ok = "Here is a detailed answer with several useful steps and examples for you."
    assert elimination("Sort a list.", "Sort a list of dates by year.", ok, False, 80) is None
    assert elimination("a", "b", ok, True, 80) == "no_information_gain"
    assert elimination("a", "b", ok, None, 80) == "unjudged"  # an unreadable verdict never passes
    assert elimination("a", "b", "Sorry, I cannot help with that.", False, 80) == "answer_sorry"
    long_sorry = "I am sorry to hear that. " + "word " * 90
    assert elimination("a", "b", long_sorry, False, 80) is None  # 'sorry' in a long answer is fine
    assert elimination("a", "b", "It is. The, a... of!", False, 80) == "answer_stop_words_only"
    assert elimination("a", "Rewrite the given prompt to be nicer", ok, False, 80) == "template_leak"
    assert elimination("a", "#Rewritten Prompt#: do it", ok, False, 80) == "template_leak"


def script(evolve, verdict="Not Equal"):
    """Evolutions from `evolve(instruction, kind)`, a fixed equality verdict, an answer per instruction."""

    def reply(conv):
        text = conv[-1]["content"]
        if text.startswith("You rewrite prompts") or text.startswith("You create prompts"):
            instruction = text.split("Prompt:\n", 1)[1].split("\n\n", 1)[0]
            kind = "breadth" if text.startswith("You create") else "depth"
            return evolve(instruction, kind)
        if text.startswith("Here are two instructions"):
            return verdict
        return f"A full answer to: {text}. It explains every step in detail with examples."

    return ScriptedBackend(default=reply)


def test_rounds_chain_survivors_and_name_round_method_parent():
    b = script(lambda t, kind: f"Harder prompt: {t} Also explain why.")
    op = EvolInstruct({"model": "m", "rounds": 3, "methods": ["constraints"]}, ctx=context(m=b))
    rows = list(op.generate(seeds(["Name a fruit."])))
    assert [r[S.MESSAGES][0]["content"] for r in rows] == [
        "Name a fruit. Also explain why.",
        "Name a fruit. Also explain why. Also explain why.",
        "Name a fruit. Also explain why. Also explain why. Also explain why.",
    ]
    assert [r["evol_round"] for r in rows] == [1, 2, 3]
    assert [r["evol_parent"] for r in rows][1] == rows[0][S.MESSAGES][0]["content"]
    assert all(r[S.PARENTS] == ["s0"] and r["evol_method"] == "constraints" for r in rows)
    assert rows[0][S.MESSAGES][1]["content"].startswith("A full answer to: Name a fruit. Also")
    # the in-depth prompt carried the method's wording
    evolve_prompts = [c[-1]["content"] for c in b.calls if c[-1]["content"].startswith("You rewrite")]
    assert len(evolve_prompts) == 3 and IN_DEPTH["constraints"] in evolve_prompts[0]
    assert op.stats["evolved_constraints"] == 3


def test_a_failed_evolution_puts_the_parent_back():
    b = script(lambda t, kind: t, verdict="Equal")  # the rewrite is the same text: no information gain
    op = EvolInstruct({"model": "m", "rounds": 2, "methods": ["breadth"]}, ctx=context(m=b))
    assert list(op.generate(seeds(["Name a fruit.", "Count to ten."]))) == []
    assert op.stats["eliminated_no_information_gain"] == 4
    # the parents evolved again in round 2
    assert sum(c[-1]["content"].startswith("You create") for c in b.calls) == 4
    # identical text needs no judge
    assert not any(c[-1]["content"].startswith("Here are two") for c in b.calls)


def test_judge_says_equal_or_unreadable():
    b = script(lambda t, kind: t + " Use exactly three words.", verdict="Equal")
    op = EvolInstruct({"model": "m", "rounds": 1, "methods": ["constraints"]}, ctx=context(m=b))
    assert (
        list(op.generate(seeds(["Name a fruit."]))) == [] and op.stats["eliminated_no_information_gain"] == 1
    )
    b = script(lambda t, kind: t + " Use exactly three words.", verdict="Maybe?")
    op = EvolInstruct({"model": "m", "rounds": 1, "methods": ["constraints"]}, ctx=context(m=b))
    assert list(op.generate(seeds(["Name a fruit."]))) == []
    assert op.stats["eliminated_unjudged"] == 1 and op.stats["equality_unread"] == 1
    op = EvolInstruct(
        {"model": "m", "rounds": 1, "methods": ["constraints"], "judge_equality": False}, ctx=context(m=b)
    )
    assert len(list(op.generate(seeds(["Name a fruit."])))) == 1


def test_template_leaks_and_failed_requests_are_counted():
    b = script(lambda t, kind: "Rewritten prompt: improve the given prompt please")
    op = EvolInstruct({"model": "m", "rounds": 1, "methods": ["deepen"]}, ctx=context(m=b))
    assert list(op.generate(seeds(["Name a fruit."]))) == [] and op.stats["eliminated_template_leak"] == 1
    b = ScriptedBackend(default=None)
    op = EvolInstruct({"model": "m", "rounds": 1}, ctx=context(m=b))
    assert list(op.generate(seeds(["Name a fruit."]))) == []
    assert op.stats["failed"] == 1 and op.stats["eliminated_request_failed"] == 1


def test_unknown_methods_are_refused_at_validation():
    with pytest.raises(ValueError, match="breadth"):
        EvolInstruct({"model": "m", "methods": ["widen"]})
