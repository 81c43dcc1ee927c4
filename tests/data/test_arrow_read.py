"""The vectorized reader must be indistinguishable from the row-by-row reader."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataflywheel.data import arrow_read, io
from tests.conftest import write_jsonl


def rows_mixed(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        row = {
            "instruction": f"Q{i % 40}:  what\tis  {i % 40}?",
            "input": "ctx" if i % 3 == 0 else "",
            "output": f" answer {i % 40} ",
            "quality": i % 5,
        }
        if i % 7 == 0:
            row["id"] = f"given-{i}"
        rows.append(row)
    return rows


def read(path, fast: bool, monkeypatch, **kw):
    with monkeypatch.context() as m:
        if not fast:
            m.setattr(arrow_read, "supported", lambda kind, fmt: False)
        m.setattr(arrow_read, "BLOCK_BYTES", 4096)  # many blocks
        batches = list(io.read_canonical(str(path), shard_size=64, **kw))
    return [(b.table.to_pylist(), [d.detail for d in b.dropped]) for b in batches]


def test_alpaca_fast_equals_slow(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "a.jsonl", rows_mixed(300))
    fast, slow = read(path, True, monkeypatch), read(path, False, monkeypatch)
    assert fast == slow
    ids = [r["id"] for batch, _ in fast for r in batch]
    assert len(set(ids)) == 300 and sum(i.endswith("-2") for i in ids) > 0


def test_a_bad_line_hands_over_to_the_row_reader_mid_file(tmp_path, monkeypatch):
    path = write_jsonl(
        tmp_path / "a.jsonl", rows_mixed(300), {250: "{broken", 270: '{"instruction": "x", "output": ""}'}
    )
    fast = read(path, True, monkeypatch, on_error="skip")
    slow = read(path, False, monkeypatch, on_error="skip")
    assert fast == slow
    assert [len(rows) + len(drops) for rows, drops in fast] == [64] * 4 + [302 - 256]


def test_messages_fast_equals_slow_and_parquet_too(tmp_path, monkeypatch):
    convs = [
        {
            "messages": [
                {"role": "system", "content": "Be  kind."},
                {"role": "user", "content": f"hi {i}"},
                {"role": "assistant", "content": f"hello {i % 9}"},
            ],
            "score_x": float(i),
        }
        for i in range(120)
    ]
    path = write_jsonl(tmp_path / "m.jsonl", convs)
    assert read(path, True, monkeypatch) == read(path, False, monkeypatch)
    pq.write_table(pa.Table.from_pylist(convs), tmp_path / "m.parquet")
    assert read(tmp_path / "m.parquet", True, monkeypatch) == read(path, False, monkeypatch)


@pytest.mark.parametrize(
    "bad",
    [
        '{"instruction": "q", "output": 3}',
        '{"instruction": "q", "output": "a", "history": [["u", "a"]]}',
        '{"id": "given-0", "instruction": "dup", "output": "a"}',
    ],
)
def test_whatever_the_fast_reader_doubts_reads_like_the_slow_one(tmp_path, monkeypatch, bad):
    path = write_jsonl(tmp_path / "a.jsonl", rows_mixed(200), {150: bad})
    assert read(path, True, monkeypatch, on_error="skip") == read(path, False, monkeypatch, on_error="skip")
