"""Property-based checks of the readers (hypothesis, a bounded number of examples so CI stays fast).

1. Random valid rows written in every file kind and format come back as the same canonical rows.
2. Random damage to a valid JSON-lines file loses no row silently: every line left intact is read, every
   damaged line is an error or a drop naming its line, and no two rows are ever merged into one.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflywheel.data import io

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Text with what breaks naive writers: quotes, commas, newlines, tabs, backslashes, non-ASCII, emoji.
TEXT = st.text(
    alphabet=st.sampled_from(list("abc xyz,\"'\n\t\\{}[]:;é漢😀-0123456789")), min_size=1, max_size=40
).filter(lambda t: t.strip())
ROWS = st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=12, unique_by=lambda r: r)


@SETTINGS
@given(rows=ROWS, kind=st.sampled_from(["jsonl", "json", "csv", "parquet", "jsonl.gz"]))
def test_rows_written_in_any_file_kind_read_back_identically(tmp_path_factory, rows, kind):
    tmp = tmp_path_factory.mktemp("rt")
    table = io.rows_to_table(
        [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in rows]
    )
    path = str(tmp / f"d.{kind}")
    with io.Writer(path, "alpaca", kind=kind.removesuffix(".gz"), keep_columns=False) as w:
        w.write_table(table)
    got = io.read_all(path)
    assert [[m["content"] for m in r["messages"]] for r in got.rows] == [[q, a] for q, a in rows]
    assert got.dropped == []


DAMAGE = st.lists(
    st.tuples(
        st.integers(min_value=0),
        st.sampled_from(["delete", "insert", "flip"]),
        st.binary(min_size=1, max_size=6),
    ),
    min_size=1,
    max_size=3,
)


@SETTINGS
@given(rows=ROWS, damage=DAMAGE)
def test_damage_to_a_jsonl_file_loses_and_merges_no_row(tmp_path_factory, rows, damage):
    tmp = tmp_path_factory.mktemp("fz")
    lines = [json.dumps({"instruction": q, "output": a}, ensure_ascii=False).encode() for q, a in rows]
    data = bytearray(b"\n".join(lines) + b"\n")
    for pos, how, blob in damage:
        p = pos % (len(data) + 1)
        if how == "delete":
            del data[p : p + len(blob)]
        elif how == "insert":
            data[p:p] = blob
        elif p < len(data):
            data[p] ^= blob[0] | 1
    (tmp / "d.jsonl").write_bytes(bytes(data))
    after = bytes(data).split(b"\n")
    try:
        got = io.read_all(str(tmp / "d.jsonl"), fmt="alpaca", on_error="skip")
    except Exception as e:
        assert type(e).__name__ == "DataError", e
        return
    read = [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in got.rows]
    intact = [r for r, line in zip(rows, lines, strict=True) if line in after]
    for r in intact:  # every untouched line is read
        assert r in read
    for r in read:  # nothing read is a blend of two rows: each read row is one line's content
        assert r in rows or any(r == _parse(line) for line in after if line.strip())
    nonblank = [line for line in after if line.strip()]
    assert len(got.rows) + len(got.dropped) == len(nonblank)  # one row or one drop per line
    for d in got.dropped:
        assert d.detail and "d.jsonl:" in d.detail  # a drop names the file and line


def _parse(line: bytes):
    try:
        v = json.loads(line)
        return (v.get("instruction"), v.get("output")) if isinstance(v, dict) else None
    except (ValueError, UnicodeDecodeError):
        return None


def test_the_fuzz_checks_can_fail():
    """The merge check is not vacuous: two rows blended into one is caught."""
    rows = [("a", "b"), ("c", "d")]
    blended = ("a", "d")
    assert blended not in rows and _parse(b'{"instruction": "a", "output": "d"}') == blended
    with pytest.raises(AssertionError):
        assert blended in rows or any(blended == _parse(x) for x in [b'{"instruction": "a", "output": "b"}'])
