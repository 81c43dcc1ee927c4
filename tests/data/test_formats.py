from __future__ import annotations

import pytest

from dataflywheel.data import formats
from dataflywheel.errors import DataError, Location

WHERE = Location("mem.jsonl", line=1)
SFT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
]
SINGLE = [{"role": "user", "content": "Add 2 and 2."}, {"role": "assistant", "content": "4"}]
PREF = {
    "prompt": [{"role": "user", "content": "Say hi"}],
    "chosen": [{"role": "assistant", "content": "Hi there!"}],
    "rejected": [{"role": "assistant", "content": "No."}],
}


def canon(raw, fmt=None):
    return formats.to_canonical(raw, fmt or formats.detect(raw), WHERE)


@pytest.mark.parametrize("fmt", ["messages", "sharegpt", "alpaca", "prompt_completion"])
@pytest.mark.parametrize("conv", [SINGLE, SFT], ids=["single", "multi"])
def test_sft_round_trip_through_every_format(fmt, conv):
    written = formats.from_canonical({"messages": conv}, fmt, keep_columns=False)
    assert formats.detect(written) == fmt
    assert canon(written)["messages"] == conv


def test_alpaca_eval_round_trip():
    raw = {"instruction": "Name a color.", "output": "Blue.", "generator": "m1", "dataset": "x"}
    assert formats.detect(raw) == "alpaca_eval"
    row = canon(raw)
    assert row["messages"] == [
        {"role": "user", "content": "Name a color."},
        {"role": "assistant", "content": "Blue."},
    ]
    assert row["generator"] == "m1" and row["dataset"] == "x"  # extra fields ride along
    assert formats.from_canonical(row, "alpaca_eval") == {**raw}


def test_preference_round_trip_and_string_form():
    row = canon(PREF)
    assert formats.from_canonical(row, "preference", keep_columns=False) == PREF
    strings = {"prompt": "Say hi", "chosen": "Hi there!", "rejected": "No."}
    assert canon(strings) == row


def test_hh_rlhf_transcripts_split_into_prompt_and_responses():
    raw = {
        "chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant: A pun.",
        "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant: No.",
    }
    row = canon(raw)
    assert [m["content"] for m in row["prompt"]] == ["hi", "hello", "joke?"]
    assert row["chosen"] == [{"role": "assistant", "content": "A pun."}]
    assert row["rejected"] == [{"role": "assistant", "content": "No."}]


def test_alpaca_with_input_history_and_system():
    raw = {
        "system": "S",
        "history": [["u1", "a1"]],
        "instruction": "Translate",
        "input": "chat",
        "output": "cat",
    }
    row = canon(raw)
    assert row["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "Translate\n\nchat"},
        {"role": "assistant", "content": "cat"},
    ]
    back = formats.from_canonical(row, "alpaca", keep_columns=False)
    assert back == {
        "system": "S",
        "history": [["u1", "a1"]],
        "instruction": "Translate\n\nchat",
        "input": "",
        "output": "cat",
    }


def test_sharegpt_roles_and_system_field():
    raw = {"system": "sys", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert canon(raw)["messages"][0] == {"role": "system", "content": "sys"}
    assert formats.from_canonical(canon(raw), "sharegpt", keep_columns=False) == raw


def test_openai_content_parts_are_joined():
    raw = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "c"},
        ]
    }
    assert canon(raw)["messages"][0]["content"] == "ab"


def test_instructions_format_is_prompt_only():
    row = canon({"instruction": "Write a poem."})
    assert row["messages"] == [{"role": "user", "content": "Write a poem."}]


def test_preference_converts_to_sft_on_the_chosen_side():
    sft = formats.from_canonical(canon(PREF), "messages", keep_columns=False)
    assert sft["messages"] == PREF["prompt"] + PREF["chosen"]


def test_sft_cannot_become_preference():
    with pytest.raises(DataError, match="chosen and rejected"):
        formats.from_canonical({"messages": SINGLE}, "preference")


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        ({"instruction": "q", "output": ""}, "output", "empty response"),
        ({"instruction": "q", "output": 5}, "output", "wrong type"),
        ({"instruction": "q", "input": "", "outptu": "a"}, "output", "missing field"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "unknown role"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
            "messages[1].content",
            "empty response",
        ),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "missing field"),
        ({"messages": "hello"}, "messages", "wrong type"),
        ({"prompt": "p", "chosen": "a", "rejected": ""}, "rejected", "empty response"),
        ({"conversations": [{"from": "alien", "value": "x"}]}, "conversations[0].from", "unknown role"),
    ],
)
def test_bad_rows_name_the_field(raw, field, reason):
    fmt = "alpaca" if "outptu" in raw else None
    with pytest.raises(DataError) as e:
        canon(raw, fmt)
    assert e.value.reason == reason
    assert e.value.where.field == field
    assert f"mem.jsonl:1: field '{field}'" in str(e.value)
    assert "expected" in str(e.value)


def test_undetectable_format_lists_the_options():
    err = formats.undetectable(["foo", "bar"], WHERE)
    assert "cannot detect the format" in str(err) and "sharegpt (conversations)" in str(err)
    assert "['bar', 'foo']" in str(err)
