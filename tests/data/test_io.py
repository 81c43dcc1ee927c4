from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataflywheel.data import io
from dataflywheel.errors import DataError
from tests.conftest import alpaca_rows, write_jsonl


def messages_of(result):
    return [r["messages"] for r in result.rows]


def test_every_reader_gives_the_same_rows(tmp_path):
    rows = alpaca_rows(5)
    ref = io.read_all(str(write_jsonl(tmp_path / "a.jsonl", rows)))
    (tmp_path / "a.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows))
    import csv

    with open(tmp_path / "a.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(
        str(tmp_path / "saved_dict")
    )
    for name in ("a.json", "a.parquet", "a.jsonl.gz", "a.csv", "saved", "saved_dict"):
        got = io.read_all(str(tmp_path / name))
        assert messages_of(got) == messages_of(ref), name
        assert [r["id"] for r in got.rows] == [r["id"] for r in ref.rows], name


def test_ids_are_content_hashes_unique_and_given_ids_kept(tmp_path):
    rows = alpaca_rows(3) + [alpaca_rows(1)[0]]  # last row repeats the first
    got = io.read_all(str(write_jsonl(tmp_path / "a.jsonl", rows))).rows
    assert got[3]["id"] == got[0]["id"] + "-2"
    assert len({r["id"] for r in got}) == 4
    again = io.read_all(str(tmp_path / "a.jsonl")).rows
    assert [r["id"] for r in again] == [r["id"] for r in got]  # stable across reads
    given = io.read_all(str(write_jsonl(tmp_path / "b.jsonl", [{**rows[0], "id": 7}]))).rows
    assert given[0]["id"] == "7"


def test_lineage_defaults(tmp_path):
    row = io.read_all(str(write_jsonl(tmp_path / "pool.jsonl", alpaca_rows(1)))).rows[0]
    assert (row["origin"], row["parents"], row["ops"], row["iteration"]) == ("pool", [], [], 0)


BAD_CASES = {
    "malformed JSON": ('{"instruction": "q", "output": "a"', "malformed JSON", None),
    "missing field": ('{"instruction": "q", "input": ""}', "missing field", "output"),
    "wrong type": ('{"instruction": ["q"], "output": "a"}', "wrong type", "instruction"),
    "empty response": ('{"instruction": "q", "output": "  "}', "empty response", "output"),
    "duplicate id": ('{"id": "x", "instruction": "q", "output": "a"}', "duplicate id", "id"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_line_is_named_with_file_line_and_field(tmp_path, case):
    text, reason, field = BAD_CASES[case]
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "x", "instruction": "a", "input": "", "output": "b"},
            {"instruction": "c", "input": "", "output": "d"},
        ],
        {2: text},
    )
    with pytest.raises(DataError) as e:
        io.read_all(str(path))
    msg = str(e.value)
    assert e.value.reason == reason
    assert f"{path}:3" in msg
    if field:
        assert f"field '{field}'" in msg
    assert "expected" in msg
    skipped = io.read_all(str(path), on_error="skip")
    assert len(skipped.rows) == 2 and len(skipped.dropped) == 1
    assert skipped.dropped[0].reason == reason and f"{path}:3" in skipped.dropped[0].detail
    assert skipped.dropped[0].row.strip() == text or json.loads(skipped.dropped[0].row) == json.loads(text)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "\xff\xfe", "output": "b"}\n')
    with pytest.raises(DataError, match=r"in.jsonl:2: invalid UTF-8; expected UTF-8 text, got byte 0xff"):
        io.read_all(str(path))
    assert len(io.read_all(str(path), on_error="skip").dropped) == 1


def test_invalid_utf8_in_json_and_csv(tmp_path):
    (tmp_path / "a.json").write_bytes(
        b'[{"instruction": "a", "output": "b"},\n{"instruction": "\xff", "output": "c"}]'
    )
    with pytest.raises(DataError, match=r"a.json:2: invalid UTF-8"):
        io.read_all(str(tmp_path / "a.json"))
    (tmp_path / "a.csv").write_bytes(b"instruction,output\nq,a\nq2,\xff\n")
    with pytest.raises(DataError, match=r"a.csv:3: invalid UTF-8"):
        io.read_all(str(tmp_path / "a.csv"))


def test_json_array_errors(tmp_path):
    (tmp_path / "a.json").write_text(
        '[{"instruction": "a", "output": "b"},\n{"instruction": 1, "output": "c"}]'
    )
    with pytest.raises(DataError, match=r"a.json row 1: field 'instruction': wrong type"):
        io.read_all(str(tmp_path / "a.json"))
    (tmp_path / "b.json").write_text('[{"instruction": "a",\n "output": }]')
    with pytest.raises(DataError, match=r"b.json:2: malformed JSON"):
        io.read_all(str(tmp_path / "b.json"))


def test_csv_line_numbers_count_multiline_cells(tmp_path):
    (tmp_path / "a.csv").write_text('instruction,output\n"multi\nline",a\nq,\n')
    with pytest.raises(DataError, match=r"a.csv:4: field 'output': missing field"):
        io.read_all(str(tmp_path / "a.csv"))


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: file not found"):
        io.read_all(str(tmp_path / "nope.jsonl"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unknown file type"):
        io.read_all(str(tmp_path / "x.txt"))


def test_undetectable_format_names_the_first_row(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(
        DataError, match=r"a.jsonl:1: cannot detect the format.*fields \['answer', 'question'\]"
    ):
        io.read_all(str(path))


def test_hub_unreachable_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match=r"could not load from the Hugging Face Hub.*save_to_disk"):
        io.read_all("hf://some-org/some-dataset-that-is-not-here")


@pytest.mark.parametrize("kind", io.WRITE_KINDS)
@pytest.mark.parametrize("fmt", ["messages", "sharegpt", "alpaca", "prompt_completion"])
def test_writer_round_trips_every_kind(tmp_path, kind, fmt):
    src = io.read_all(str(write_jsonl(tmp_path / "in.jsonl", alpaca_rows(4))))
    out = tmp_path / f"out.{kind}"
    with io.Writer(str(out), fmt) as w:
        w.write_rows(src.rows[:2])
        w.write_rows(src.rows[2:])
    back = io.read_all(str(out))
    assert io.detect_format(str(out))[0] == fmt
    assert messages_of(back) == messages_of(src)
    assert [r["id"] for r in back.rows] == [r["id"] for r in src.rows]  # keep_columns carries the id
    assert [r["origin"] for r in back.rows] == ["in"] * 4


def test_writer_leaves_no_partial_file_on_error(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), io.Writer(str(out), "messages") as w:
        w.write_rows(
            [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
        )
        raise RuntimeError("boom")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_mixed_type_extra_field_is_kept_as_json_text():
    table = io.rows_to_table([{"id": "a", "meta": 1}, {"id": "b", "meta": "x"}])
    assert table.column("meta").to_pylist() == ["1", '"x"']


@pytest.mark.parametrize(
    ("text", "good"),
    [
        # a stray quote in the last column would swallow the rows after it into one response
        ('instruction,output\nq1,"broken answer\nq2,a2\nq3,a3\nq4,"a4"\nq5,a5\n', ["q2", "q3", "q4", "q5"]),
        # in a middle column it would merge six good rows into one dropped row
        (
            'instruction,output,x\nq1,"broken,a1\nq2,a2,1\nq3,a3,2\nq4,"a4",3\nq5,a5,4\nq6,a6,5\nq7,a7,6\n',
            ["q2", "q3", "q4", "q5", "q6", "q7"],
        ),
        # up to the end of the file
        ('instruction,output\nq1,"broken answer\nq2,a2\nq3,a3\n', ["q2", "q3"]),
    ],
)
def test_csv_quote_that_does_not_close_swallows_no_row(tmp_path, text, good):
    (tmp_path / "a.csv").write_text(text)
    with pytest.raises(DataError, match=r"a.csv:2: unclosed or misplaced quote"):
        io.read_all(str(tmp_path / "a.csv"))
    got = io.read_all(str(tmp_path / "a.csv"), on_error="skip")
    assert [r["messages"][0]["content"] for r in got.rows] == good
    assert len(got.dropped) == 1 and "broken" in got.dropped[0].row
    assert len(got.rows) + len(got.dropped) == text.count("\n") - 1  # every row read or dropped


@pytest.mark.parametrize(
    ("text", "good", "bad_line"),
    [
        # found by tests/data/test_fuzz.py: a stray quote opens a field that closes lines later, leaving a
        # record with too many cells that held the two good rows after it
        ('instruction,output\nq1,x"y,",a\n",",b\nq3,",c"\n', [",", "q3"], 2),
        # one that closes in the next good line with the right number of cells, but is no CSV a writer
        # writes (a quote inside an unquoted cell): the good line is read on its own
        ('instruction,output\n",,0\n0,",0"\n', ["0"], 2),
        # a blank line before the bad record: the error names the record's line, not the blank one
        ('instruction,output\nq1,a1\n\nq2,"a2""\nq3,"x""y"\n', ["q1", "q3"], 4),
    ],
)
def test_csv_a_stray_quote_that_closes_lines_later_swallows_no_row(tmp_path, text, good, bad_line):
    (tmp_path / "a.csv").write_text(text)
    got = io.read_all(str(tmp_path / "a.csv"), on_error="skip")
    assert [r["messages"][0]["content"] for r in got.rows] == good
    assert [d.detail.split(": ")[0] for d in got.dropped] == [f"{tmp_path / 'a.csv'}:{bad_line}"]


def test_csv_control_characters_in_a_cell_are_not_line_breaks(tmp_path):
    """\x0b, \x0c, \x1c-\x1e, \x85 and \u2028 end a line for str.splitlines, not for CSV: the line named in
    an error and the line reading restarts from must not shift."""
    text = 'instruction,output\n"q\x0b1",a\x0c1\nq2,"a\u20282\nq3,a3\n'
    (tmp_path / "a.csv").write_text(text, newline="")
    got = io.read_all(str(tmp_path / "a.csv"), on_error="skip")
    assert [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in got.rows] == [
        ("q\x0b1", "a\x0c1"),
        ("q3", "a3"),
    ]
    assert [d.detail.split(": ")[0] for d in got.dropped] == [f"{tmp_path / 'a.csv'}:3"]


def test_csv_multiline_quoted_fields_stay_one_row(tmp_path):
    (tmp_path / "a.csv").write_text('instruction,output\nq1,"line one, with a comma\nline two, too"\nq2,a2\n')
    got = io.read_all(str(tmp_path / "a.csv"))
    assert [r["messages"][1]["content"] for r in got.rows] == ["line one, with a comma\nline two, too", "a2"]


def _gz_rows(n: int) -> bytes:
    import gzip

    lines = [json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(n)]
    return gzip.compress(("\n".join(lines) + "\n").encode())


def test_a_truncated_gz_keeps_the_rows_before_the_damage_and_records_the_rest(tmp_path):
    data = _gz_rows(3000)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.jsonl.gz:\d+: damaged gzip data"):
        io.read_all(str(path))
    got = io.read_all(str(path), on_error="skip")
    assert 0 < len(got.rows) < 3000
    assert [r["messages"][0]["content"] for r in got.rows] == [f"q{i}" for i in range(len(got.rows))]
    (loss,) = got.dropped
    assert loss.reason == "damaged gzip data" and "nothing after byte" in loss.detail


def test_a_file_named_gz_that_is_not_gzip_is_named_and_validation_says_so(tmp_path):
    from dataflywheel.recipe.validate import validate_file

    (tmp_path / "plain.jsonl.gz").write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    with pytest.raises(DataError, match=r"plain.jsonl.gz:1: damaged gzip data.*Not a gzipped file"):
        io.read_all(str(tmp_path / "plain.jsonl.gz"))
    data = _gz_rows(3000)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    for name in ("plain.jsonl.gz", "cut.jsonl.gz"):  # damage past the first rows is found too
        (tmp_path / "r.yaml").write_text(f"version: 1\nname: g\ninputs: [{{path: {name}}}]\n")
        problems = [str(p) for p in validate_file(tmp_path / "r.yaml")[2]]
        assert len(problems) == 1 and "damaged gzip data" in problems[0], problems


def test_inputs_in_other_layouts_are_read_with_a_field_mapping(tmp_path, shared_data):
    """GSM8K's question/answer rows, read as Alpaca without a conversion script, on both readers."""
    import shutil

    from dataflywheel.recipe.validate import validate_file
    from tests.engine.test_local import read_jsonl

    src = shared_data / "gsm8k" / "train.jsonl"
    lines = src.read_text().splitlines()[:5]
    (tmp_path / "gsm.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copy(tmp_path / "gsm.jsonl", tmp_path / "gsm_slow.jsonl")
    with open(tmp_path / "gsm_slow.jsonl", "a") as fh:  # a bad last line sends this file to the row reader
        fh.write("{not json\n")
    fields = {"instruction": "question", "output": "answer"}
    want = [json.loads(x) for x in lines]
    for name in ("gsm.jsonl", "gsm_slow.jsonl"):  # the vectorized reader, and the row reader
        batches = io.read_canonical(str(tmp_path / name), on_error="skip", fields=fields)
        rows = [r for b in batches for r in b.rows]
        assert [r["messages"] for r in rows] == [
            [{"role": "user", "content": w["question"]}, {"role": "assistant", "content": w["answer"]}]
            for w in want
        ]
    (tmp_path / "r.yaml").write_text(
        "version: 1\nname: f\ninputs: [{path: gsm.jsonl, fields: {instruction: question, output: answer}}]\n"
    )
    recipe, ops, problems = validate_file(tmp_path / "r.yaml")
    assert problems == []
    from dataflywheel.engine.local import LocalExecutor

    out = read_jsonl(LocalExecutor(recipe, ops, tmp_path / "run", progress=False).run().output_path)
    assert [r["messages"][0]["content"] for r in out] == [json.loads(x)["question"] for x in lines]
