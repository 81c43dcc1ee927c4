from __future__ import annotations

import pytest

from dataflywheel.ops.parsing import parse_score, parse_verdict


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("4\nThe answer is mostly right.", 4.0),
        ("4.5\nGood.", 4.5),
        ("**5**\nPerfect.", 5.0),
        ("Score: 3\nSome errors.", 3.0),
        ("The response is decent.\nScore: 2", 2.0),
        ("4/5\nok", 4.0),
        ("8 out of 10\nok", 4.0),
        ("Rating: [[3]]", 3.0),
        ("I would rate it highly.", None),
        ("7\nout of range", None),
        ("", None),
        ("   \n\t ", None),
        (None, None),
    ],
)
def test_parse_score_0_to_5(text, want):
    assert parse_score(text, 0, 5) == want


def test_parse_verdict():
    assert parse_verdict("After comparing, [[B]] is better.") == "B"
    assert parse_verdict("tie [[C]]") == "C"
    assert parse_verdict("no verdict") is None
    assert parse_verdict(" \n ") is None
