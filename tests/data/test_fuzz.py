"""Property-based checks of the readers (hypothesis, a bounded number of examples so CI stays fast).

1. Random valid rows written in every file kind and format come back as the same canonical rows.
2. Random damage to a valid JSON-lines or CSV file loses no row silently: every line left intact is read,
   every damaged line is an error or a drop naming its line, and no row read takes in an intact line
   (a stray quote in a CSV must not swallow the lines after it).
3. A gzip file cut at any byte keeps the rows before the cut, in order, and records the loss.
"""

from __future__ import annotations

import csv
import gzip
import io as stdio
import json
import re

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


def read_or_refuse(path, fmt: str | None = "alpaca"):
    """A damaged file read under on_error: skip, or None when the reader refused it (a DataError naming
    the file, never another exception)."""
    try:
        return io.read_all(str(path), fmt=fmt, on_error="skip")
    except Exception as e:
        assert type(e).__name__ == "DataError" and path.name in str(e), e
        return None


def pairs(got) -> list[tuple[str, str]]:
    return [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in got.rows]


def damaged(data: bytes, damage) -> bytes:
    """``data`` with each (position, how, bytes) applied: bytes deleted or inserted there, or one flipped."""
    out = bytearray(data)
    for pos, how, blob in damage:
        p = pos % (len(out) + 1)
        if how == "delete":
            del out[p : p + len(blob)]
        elif how == "insert":
            out[p:p] = blob
        elif p < len(out):
            out[p] ^= blob[0] | 1
    return bytes(out)


@SETTINGS
@given(rows=ROWS, damage=DAMAGE)
def test_damage_to_a_jsonl_file_loses_and_merges_no_row(tmp_path_factory, rows, damage):
    tmp = tmp_path_factory.mktemp("fz")
    lines = [json.dumps({"instruction": q, "output": a}, ensure_ascii=False).encode() for q, a in rows]
    data = damaged(b"\n".join(lines) + b"\n", damage)
    (tmp / "d.jsonl").write_bytes(data)
    after = data.split(b"\n")
    got = read_or_refuse(tmp / "d.jsonl")
    if got is None:
        return
    read = pairs(got)
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


LINE_TEXT = TEXT.map(lambda t: t.replace("\n", " ").replace("\r", " ")).filter(lambda t: t.strip())
LINE_ROWS = st.lists(st.tuples(LINE_TEXT, LINE_TEXT), min_size=1, max_size=12, unique_by=lambda r: r)


def _csv_line(fields: list[str]) -> bytes:
    out = stdio.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue().encode()


def _csv_parse(text: bytes):
    """The one two-cell record ``text`` holds (None if it holds anything else)."""
    try:
        records = list(csv.reader(stdio.StringIO(text.decode(), newline="")))
    except (csv.Error, UnicodeDecodeError):
        return None
    return tuple(records[0]) if len(records) == 1 and len(records[0]) == 2 else None


@SETTINGS
@given(rows=LINE_ROWS, damage=DAMAGE)
def test_damage_to_a_csv_file_loses_and_merges_no_row(tmp_path_factory, rows, damage):
    tmp = tmp_path_factory.mktemp("fzc")
    header = _csv_line(["instruction", "output"])
    lines = [_csv_line([q, a]) for q, a in rows]
    body = damaged(b"\n".join(lines) + b"\n", damage)  # the header stays whole: nothing reads without it
    (tmp / "d.csv").write_bytes(header + b"\n" + body)
    parts = re.split(rb"(\r\n|\r|\n)", body)  # a CSV line ends at any of the three
    after, ends = parts[::2], parts[1::2]
    got = read_or_refuse(tmp / "d.csv")
    if got is None:
        return
    read = pairs(got)
    for r, line in zip(rows, lines, strict=True):  # every untouched line is read
        if line in after:
            assert r in read, (r, after)
    # A damaged line may read as a row with other content, and a newline put inside a quoted field
    # makes it run over lines: legal CSV. What must never happen is a row that takes in an intact line.
    damaged_runs = set()
    for i in range(len(after)):
        j = i
        while j < len(after) and after[j] not in lines:
            run = b"".join(line + end for line, end in zip(after[i:j], ends[i:j], strict=True))
            damaged_runs.add(_csv_parse(run + after[j]))
            j += 1
    for r in read:
        assert r in rows or r in damaged_runs, (r, after)
    nonempty = [line for line in after if line]  # a line of spaces is a row (dropped as empty text)
    assert len(got.rows) + len(got.dropped) <= len(nonempty)  # at most one row or one drop per line
    assert len(got.rows) + len(got.dropped) >= len([x for x in after if x in lines])
    for d in got.dropped:
        assert d.detail and "d.csv:" in d.detail  # a drop names the file and line


@SETTINGS
@given(n=st.integers(min_value=1, max_value=400), cut=st.floats(min_value=0.0, max_value=1.0))
def test_a_gzip_file_cut_anywhere_keeps_the_rows_before_the_cut(tmp_path_factory, n, cut):
    tmp = tmp_path_factory.mktemp("fzg")
    text = "".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(n))
    data = gzip.compress(text.encode(), mtime=0)
    end = int(len(data) * cut)
    (tmp / "d.jsonl.gz").write_bytes(data[:end])
    got = read_or_refuse(tmp / "d.jsonl.gz", fmt=None)  # an empty file has no format to detect
    if got is None:
        return
    instructions = [q for q, _ in pairs(got)]
    assert instructions == [f"q{i}" for i in range(len(instructions))]  # a prefix, in order
    if end == len(data):
        assert len(instructions) == n and got.dropped == []
    else:  # the loss is recorded, with where the damage starts
        assert len(instructions) < n or got.dropped
        assert [d.reason for d in got.dropped] == ["damaged gzip data"], got.dropped


def test_the_fuzz_checks_can_fail():
    """The merge check is not vacuous: two rows blended into one is caught."""
    rows = [("a", "b"), ("c", "d")]
    blended = ("a", "d")
    assert blended not in rows and _parse(b'{"instruction": "a", "output": "d"}') == blended
    with pytest.raises(AssertionError):
        assert blended in rows or any(blended == _parse(x) for x in [b'{"instruction": "a", "output": "b"}'])
