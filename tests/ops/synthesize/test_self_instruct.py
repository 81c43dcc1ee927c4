import re
from collections import Counter

import pytest
from rouge_score import rouge_scorer

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.synthesize.self_instruct import (
    SelfInstruct,
    filter_instances,
    instruction_problem,
    parse_instances,
    parse_labelled,
    parse_task_list,
)
from tests.fakes import ScriptedBackend, context

SEEDS = [
    "Give three reasons why people enjoy gardening in the spring.",
    "Translate the following sentence into Spanish for a tourist.",
    "Decide whether the given movie review is positive or negative.",
    "Explain how a bicycle gear system works to a child.",
    "Suggest a name for a new coffee shop near a university.",
    "Summarize the main argument of the paragraph in one sentence.",
    "List five healthy snacks that need no cooking at all.",
    "Write a short apology email to a customer whose order was late.",
    "Tell whether the number given is a prime number or not.",
    "Describe the water cycle in four simple steps for students.",
]
NEW_TASKS = """9. Write a haiku about the first snow of winter in the mountains.
10. Give three reasons why people enjoy gardening in spring.
11. Draw a picture of a cat sitting on a mat today.
12. Sort it.
13. Classify the tweet as happy, sad or angry based on its words.
14. Plan a one-day visit to a museum for a family with two kids"""


def seeds_table(texts=SEEDS):
    return io.rows_to_table(
        [{S.ID: f"s{i}", S.MESSAGES: [{"role": "user", "content": t}]} for i, t in enumerate(texts)]
    )


def answer(conv):
    """The scripted model: a task list, Yes/No by task, instances by task and prompt kind."""
    text = conv[-1]["content"]
    task = text.rsplit("Task: ", 1)[-1]
    if "Come up with a series of tasks" in text:
        return NEW_TASKS
    if "Is it classification?" in text:
        return "Yes" if task.startswith("Classify") else "No"
    if task.startswith("Classify") and "Class label" in text:
        return "Class label: Happy\nInput: What a lovely day!\nClass label: Sad\nInput: I lost my keys."
    if task.startswith("Write a haiku"):
        return "Output: Snow falls on the peaks / silent white blanket / winter breathes"
    if task.startswith("Plan a one-day"):
        return (
            "Example 1\nInput: Paris\nOutput: Louvre in the morning.\n"
            "Example 2\nInput: Paris\nOutput: Orsay after lunch."
        )
    return "Output: a generic answer"


def backend(**kw):
    return ScriptedBackend(default=answer, **kw)


def test_parse_task_list_splits_on_numbered_lines():
    assert parse_task_list("9. First task here.\n10. Second task\n   goes on.\n") == [
        "First task here.",
        "Second task goes on.",
    ]
    # a reply that starts without a number starts with the next item; a restart at 1 still splits
    assert parse_task_list("Make a list of fruits.\n1. Name a color\n2) Another one") == [
        "Make a list of fruits.",
        "Name a color",
        "Another one",
    ]
    assert parse_task_list("1. 1. Doubled number here") == ["Doubled number here"]
    assert parse_task_list("  \n") == []


def test_instruction_filters_follow_the_paper():
    banned = re.compile(r"\b(image|draw|go to)\b", re.IGNORECASE)
    assert instruction_problem("Sort it now", 4, 150, banned) == "too_short"
    assert instruction_problem("word " * 151, 4, 150, banned) == "too_long"
    assert instruction_problem("Draw a cat sitting on a mat", 4, 150, banned) == "banned_word"
    assert (
        instruction_problem("Describe the drawing of a cat on a mat", 4, 150, banned) is None
    )  # whole words
    assert instruction_problem("Write a program that sorts numbers", 4, 150, banned) == "program"
    assert instruction_problem('"Quoted task starts with punctuation"', 4, 150, banned) == "punctuation"
    assert instruction_problem("Écris une phrase en français stp", 4, 150, banned) == "non_ascii"
    assert instruction_problem("List five healthy snacks for kids", 4, 150, banned) is None


def test_instance_filters_follow_the_paper():
    kept, dropped = filter_instances([("a", "b"), ("a", "b"), ("x", "x"), ("y", ""), ("z", "Answer:")])
    assert kept == [("a", "b")]
    assert dropped == {"duplicate": 1, "input_equals_output": 1, "empty_output": 1, "cut_off": 1}
    # the same input with two outputs: the whole instruction's instances go
    assert filter_instances([("a", "b"), ("a", "c"), ("d", "e")]) == ([], {"same_input_different_output": 3})
    # empty inputs may repeat with different outputs (tasks without input)
    assert filter_instances([("", "one"), ("", "two")])[0] == [("", "one"), ("", "two")]


def test_instance_parsers():
    assert parse_instances(
        "Example 1\nInput: 3\nOutput: 9\nExample 2\nInput: None\nOutput: 0\nTask: next"
    ) == [
        ("3", "9"),
        ("", "0"),
    ]
    assert parse_instances("Output: just an answer") == [("", "just an answer")]
    assert parse_instances("Input: 2 + 2\nOutput: 4") == [("2 + 2", "4")]
    # no "Output:" at all: the whole reply is the output (the paper's reading)
    assert parse_instances("A reply with no fields.\nTask: next") == [("", "A reply with no fields.")]
    assert parse_instances("  ") == []
    assert parse_labelled("Class label: Yes\nInput: 2 is even\nClass label: No\nInput: 3 is even") == [
        ("2 is even", "Yes"),
        ("3 is even", "No"),
    ]
    assert parse_labelled("Class label: Mercury") == [("", "Mercury")]


def test_generate_keeps_new_tasks_only_and_names_parents():
    b = backend()
    op = SelfInstruct({"model": "m", "rounds": 1, "prompts_per_round": 2}, ctx=context(m=b))
    rows = list(op.generate(seeds_table()))
    by_instruction = Counter(r["instruction"] for r in rows)
    # 9 kept; 10 is a near-copy of a seed (ROUGE-L > 0.7); 11 has a banned word; 12 is too short;
    # 13 is classification (output-first); 14 keeps 0 instances (same input, different outputs)
    assert set(by_instruction) == {
        "Write a haiku about the first snow of winter in the mountains.",
        "Classify the tweet as happy, sad or angry based on its words.",
    }
    # task 10 is similar to a seed in both replies; the second, identical, reply repeats 9, 13 and 14,
    # by now near-copies of the first reply's
    assert op.stats["instruction_dropped_similar"] == 2 + 3
    assert op.stats["instruction_dropped_banned_word"] == 2
    assert op.stats["instruction_dropped_too_short"] == 2
    assert op.stats["instance_dropped_same_input_different_output"] == 2
    assert op.stats["instruction_without_instances"] == 1
    tweet = [r for r in rows if r["instruction"].startswith("Classify")]
    assert [(r["input"], r[S.MESSAGES][-1]["content"], r["is_classification"]) for r in tweet] == [
        ("What a lovely day!", "Happy", True),
        ("I lost my keys.", "Sad", True),
    ]
    assert tweet[0][S.MESSAGES][0]["content"] == tweet[0]["instruction"] + "\n\nWhat a lovely day!"
    for r in rows:
        assert r[S.PARENTS] and set(r[S.PARENTS]) <= {f"s{i}" for i in range(len(SEEDS))}
        assert len(r["prompt_version"]) == 12
    # each instruction prompt showed 8 seed tasks, numbered 1-8, asking for 9 on
    first = b.calls[0][-1]["content"]
    assert re.findall(r"^(\d+)\. ", first, re.MULTILINE) == [str(i) for i in range(1, 9)]
    assert "from 9 on" in first


def test_later_rounds_show_two_machine_tasks_and_rouge_bound_holds():
    b = backend()
    op = SelfInstruct({"model": "m", "rounds": 2, "prompts_per_round": 1}, ctx=context(m=b))
    rows = list(op.generate(seeds_table()))
    prompts = [c[-1]["content"] for c in b.calls if "Come up with a series" in c[-1]["content"]]
    assert len(prompts) == 2
    machine = [
        t
        for t in ("Write a haiku about the first snow", "Classify the tweet", "Plan a one-day")
        if t in prompts[1]
    ]
    assert len(machine) == 2 and not any(t in prompts[0] for t in machine)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    kept = sorted({r["instruction"] for r in rows})
    pool = SEEDS + kept
    for i, a in enumerate(pool):
        for b_ in pool[:i]:
            assert scorer.score(b_, a)["rougeL"].fmeasure <= 0.7


def test_truncated_last_task_is_dropped_and_failures_counted():
    b = ScriptedBackend(
        [("Come up with", "9. Write a limerick about a lazy orange cat.\n10. Write a story about")],
        default=None,
        finish="length",
    )
    op = SelfInstruct({"model": "m", "rounds": 1, "prompts_per_round": 1}, ctx=context(m=b))
    assert list(op.generate(seeds_table())) == []
    assert op.stats["instruction_dropped_truncated"] == 1
    assert op.stats["instructions_kept"] == 1
    # the classification request failed: the instruction is counted, not guessed
    assert op.stats["failed"] == 1 and op.stats["classification_unread"] == 1


def test_unreadable_classification_is_counted_not_defaulted():
    b = ScriptedBackend(
        [
            ("Come up with", "9. Write a limerick about a lazy orange cat."),
            ("Is it classification?", "Maybe, it depends."),
        ]
    )
    op = SelfInstruct({"model": "m", "rounds": 1, "prompts_per_round": 1}, ctx=context(m=b))
    assert list(op.generate(seeds_table())) == []
    assert op.stats["classification_unread"] == 1 and op.stats["unparsed"] == 1


@pytest.mark.parametrize("classify", [True, False])
def test_classify_off_uses_input_first(classify):
    b = backend()
    op = SelfInstruct(
        {"model": "m", "rounds": 1, "prompts_per_round": 1, "classify": classify}, ctx=context(m=b)
    )
    rows = list(op.generate(seeds_table()))
    tweet = [r for r in rows if r["instruction"].startswith("Classify")]
    if classify:
        assert [r["is_classification"] for r in tweet] == [True, True]
    else:
        assert [(r["input"], r[S.MESSAGES][-1]["content"]) for r in tweet] == [("", "a generic answer")]
        assert all(r["is_classification"] is None for r in rows)
        assert not any("Is it classification?" in c[-1]["content"] for c in b.calls)
