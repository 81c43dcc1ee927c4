"""Reading files as they are: every supported file kind as a stream of raw rows, and format detection.

Readers: jsonl (and .jsonl.gz), json (an array; .json.gz), parquet, csv, a folder saved by
``datasets.save_to_disk``, and ``hf://name[:split]`` through ``datasets`` where the Hub is reachable.
Every problem names the file, the line (text formats) or row (columnar formats), and the field.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from dataflywheel.data import formats
from dataflywheel.data import schema as S
from dataflywheel.errors import DataError, Location

# CSV cells that hold structured values are written and read back as JSON text.
CSV_JSON_FIELDS = {
    "messages",
    "conversations",
    "history",
    "prompt",
    "chosen",
    "rejected",
    "completion",
    S.PARENTS,
    S.OPS,
}


@dataclass
class RawRow:
    """One row as found in the file, or the error that stopped it from being read."""

    where: Location
    value: Any = None
    error: DataError | None = None
    text: str | None = None  # the raw text, kept for the drop log when the row is bad


def kind_of(path: str) -> str:
    if path.startswith("hf://"):
        return "hf_hub"
    p = Path(path)
    if p.is_dir():
        return "hf_disk"
    name = p.name.lower().removesuffix(".gz")
    for ext, kind in (
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "json"),
        (".parquet", "parquet"),
        (".csv", "csv"),
    ):
        if name.endswith(ext):
            return kind
    raise DataError(
        "unknown file type",
        Location(path),
        "a .jsonl, .json, .parquet or .csv file (optionally .gz), a saved HF dataset folder or hf://name",
    )


def _open_bytes(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


# What reading a damaged or mislabelled .gz raises, at the start or in the middle of the stream.
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error, OSError)


def _damaged(path: str, where: Location, e: Exception, offset: int) -> DataError:
    return DataError(
        "damaged gzip data",
        where,
        "a complete gzip file",
        f"{type(e).__name__}: {e}; nothing after byte {offset:,} of the text can be read",
    )


def gzip_problem(path: str) -> str | None:
    """Why a .gz file cannot be read to its end, or None (streams the whole file: cheap next to a run)."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
    except GZIP_ERRORS as e:
        return f"{path}: damaged gzip data ({type(e).__name__}: {e})"
    return None


def _read_all_bytes(path: str) -> bytes:
    with _open_bytes(path) as fh:
        try:
            return fh.read()
        except GZIP_ERRORS as e:
            raise _damaged(path, Location(path), e, 0) from None


def _bad_json(path: str, line: int | None, row: int | None, err: Exception, raw: bytes) -> DataError:
    where = Location(path, line=line, row=row)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as u:
        return DataError(
            "invalid UTF-8", where, "UTF-8 text", f"byte 0x{raw[u.start]:02x} at offset {u.start}"
        )
    return DataError("malformed JSON", where, "one JSON object per line", str(err).split(": line")[0])


def _iter_jsonl(path: str) -> Iterator[RawRow]:
    with _open_bytes(path) as fh:
        lineno, offset, lines = 0, 0, iter(fh)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except GZIP_ERRORS as e:  # the rows read so far stand; the rest is one recorded loss
                where = Location(path, line=lineno + 1)
                yield RawRow(
                    where, error=_damaged(path, where, e, offset), text=f"<unreadable from byte {offset}>"
                )
                return
            lineno += 1
            offset += len(raw)
            if not raw.strip():
                continue
            try:
                yield RawRow(Location(path, line=lineno), orjson.loads(raw))
            except orjson.JSONDecodeError as e:
                text = raw.decode("utf-8", errors="replace").rstrip("\n")
                yield RawRow(
                    Location(path, line=lineno), error=_bad_json(path, lineno, None, e, raw), text=text
                )


def _iter_json(path: str) -> Iterator[RawRow]:
    raw = _read_all_bytes(path)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as u:
            line = raw.count(b"\n", 0, u.start) + 1
            raise DataError(
                "invalid UTF-8", Location(path, line=line), "UTF-8 text", f"byte 0x{raw[u.start]:02x}"
            ) from None
        raise DataError(
            "malformed JSON",
            Location(path, line=e.lineno),
            "a JSON array of objects",
            f"{e.msg} at column {e.colno}",
        ) from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]} style wrappers
    if not isinstance(data, list):
        raise DataError("wrong type", Location(path), "a JSON array of row objects", type(data).__name__)
    for i, value in enumerate(data):
        yield RawRow(Location(path, row=i), value)


def _iter_parquet(path: str) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError("unreadable parquet", Location(path), "a Parquet file", str(e)) from None
    i = 0
    for batch in pf.iter_batches(batch_size=8192):
        for value in batch.to_pylist():
            yield RawRow(Location(path, row=i), value)
            i += 1


def _csv_cell(key: str, value: str):
    # CSV has only text: structured fields come as JSON text, and the engine's numeric columns are parsed.
    if value == "":
        return None
    if key == S.ITERATION and value.lstrip("-").isdigit():
        return int(value)
    if key.startswith("score_"):
        try:
            return float(value)
        except ValueError:
            return value
    if key in CSV_JSON_FIELDS and value[:1] in "[{":
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


# One CSV record as RFC 4180 writes it: quoted fields (quotes doubled inside, line breaks allowed) or
# unquoted ones (no quote, comma or line break), separated by commas.
_CSV_FIELD = r'(?:"(?:[^"]|"")*"|[^",\r\n]*)'
_RFC4180_RECORD = re.compile(rf"{_CSV_FIELD}(?:,{_CSV_FIELD})*(?:\r\n|\r|\n)?")


def _past_blank_lines(lines: list[str], pos: int, k: int) -> int:
    """The first k' >= k with lines[pos + k'] not blank (the csv reader skips blank lines)."""
    while pos + k < len(lines) - 1 and not lines[pos + k].strip("\r\n"):
        k += 1
    return k


def _iter_csv(path: str) -> Iterator[RawRow]:
    raw = _read_all_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as u:
        line = raw.count(b"\n", 0, u.start) + 1
        raise DataError(
            "invalid UTF-8", Location(path, line=line), "UTF-8 text", f"byte 0x{raw[u.start]:02x}"
        ) from None
    # CSV lines end at \r\n, \r or \n only (str.splitlines would also break at \x0b, \x0c, \x1c-\x1e,
    # \x85 and \u2028-9, which CSV fields may hold)
    lines = io.StringIO(text, newline="").readlines()
    if not lines:
        return
    fieldnames = next(csv.reader([lines[0]]))
    pos = 1  # lines[pos] is the first line not yet read (file line pos + 1)
    while pos < len(lines):
        # strict: a quote that does not close before the next delimiter or line end is an error, never a
        # field that silently swallows the rows after it
        reader = csv.DictReader(io.StringIO("".join(lines[pos:]), newline=""), fieldnames, strict=True)
        consumed, bad = 0, None  # bad: (where the record starts, reason, expected) of a damaged record
        try:
            for rec in reader:
                first = _past_blank_lines(lines, pos, consumed)  # where this record starts
                consumed = reader.line_num  # lines read up to its end
                where = Location(path, line=pos + first + 1)
                cells_ok = None not in rec and None not in rec.values()
                multiline = consumed - first > 1
                if multiline and not (
                    cells_ok and _RFC4180_RECORD.fullmatch("".join(lines[pos + first : pos + consumed]))
                ):
                    # a quoted field ran over line ends, and the record has the wrong number of cells or is
                    # not what a CSV writer writes (a quote inside an unquoted field): a stray quote on its
                    # first line, not a field with line breaks
                    expected = f"{len(fieldnames)} cells on the line, or a quoted field that closes"
                    bad = (first, "a quote runs past the line end", expected)
                    break
                if None in rec:
                    error = DataError("too many cells", where, f"{len(fieldnames)} columns")
                    yield RawRow(where, error=error, text=str(rec))
                    continue
                yield RawRow(where, {k: _csv_cell(k, v) for k, v in rec.items() if v is not None})
        except csv.Error as e:
            expected = "a quoted field closed before the next comma or line end (RFC 4180)"
            bad = (_past_blank_lines(lines, pos, consumed), f"unclosed or misplaced quote ({e})", expected)
        if bad is None:
            return
        # Only the bad record's first line goes to the drop log; reading starts again on the next line, so
        # the rows a stray quote would have swallowed are read.
        first, reason, expected = bad
        where = Location(path, line=pos + first + 1)
        yield RawRow(where, error=DataError(reason, where, expected), text=lines[pos + first])
        pos += first + 1


def _iter_hf(ds, path: str) -> Iterator[RawRow]:
    i = 0
    for batch in ds.iter(batch_size=4096):
        keys = list(batch)
        for j in range(len(batch[keys[0]]) if keys else 0):
            yield RawRow(Location(path, row=i), {k: batch[k][j] for k in keys})
            i += 1


def _load_hf_disk(path: str, split: str | None):
    import datasets

    try:
        ds = datasets.load_from_disk(path)
    except FileNotFoundError as e:
        raise DataError(
            "not a saved dataset folder", Location(path), "a folder written by datasets' save_to_disk", str(e)
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        pick = split or ("train" if "train" in ds else (names[0] if len(names) == 1 else None))
        if pick not in ds:
            raise DataError("which split?", Location(path), f"'split' set to one of {names}", repr(split))
        ds = ds[pick]
    return ds


def _load_hf_hub(path: str, split: str | None):
    import datasets

    name = path.removeprefix("hf://")
    if ":" in name:
        name, split = name.split(":", 1)
    try:
        return datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # the hub raises many kinds; all mean "could not get it"
        raise DataError(
            "could not load from the Hugging Face Hub",
            Location(path),
            "a reachable hub; offline, download it elsewhere with datasets' save_to_disk and point "
            "'path' at that folder",
            f"{type(e).__name__}: {str(e)[:200]}",
        ) from None


def iter_raw(path: str, split: str | None = None, fields: dict[str, str] | None = None) -> Iterator[RawRow]:
    """Every row of a file as found, in order; a bad row comes back with its error instead of raising.
    ``fields`` maps a format's field to the file's name for it ({"instruction": "question"})."""
    kind = kind_of(path)
    if kind == "hf_hub":
        rows = _iter_hf(_load_hf_hub(path, split), path)
    elif not os.path.exists(path):
        raise DataError("file not found", Location(path), "an existing file or folder")
    elif kind == "hf_disk":
        rows = _iter_hf(_load_hf_disk(path, split), path)
    else:
        readers = {"jsonl": _iter_jsonl, "json": _iter_json, "parquet": _iter_parquet, "csv": _iter_csv}
        rows = readers[kind](path)
    if not fields:
        yield from rows
        return
    for raw in rows:
        if isinstance(raw.value, dict):
            raw.value = rename_fields(raw.value, fields)
        yield raw


def rename_fields(row: dict, fields: dict[str, str]) -> dict:
    """The row with each file field named as the format names it (``fields``: format name -> file name)."""
    out = dict(row)
    for name, found in fields.items():
        if found in out:
            out[name] = out.pop(found)
    return out


LOOK_PAST_BAD_HEAD = 10_000  # rows format detection reads at most to find a good one


def detect_format(
    path: str, split: str | None = None, peek: int = 20, fields: dict[str, str] | None = None
) -> tuple[str, list[str]]:
    """The format of a file from its first good rows, and the fields seen in them."""
    keys: dict[str, None] = {}
    first: RawRow | None = None
    damaged = None
    for n, raw in enumerate(iter_raw(path, split, fields)):
        if raw.error is None and isinstance(raw.value, dict):
            first = first or raw
            keys.update(dict.fromkeys(raw.value))
        elif raw.error is not None and raw.error.reason == "damaged gzip data":
            damaged = raw.error
        # at least `peek` rows; past a bad head of the file, on to the first good row (bounded)
        if n + 1 >= peek and (first is not None or n + 1 >= LOOK_PAST_BAD_HEAD):
            break
    if first is None:
        if damaged is not None:
            raise damaged  # say what is wrong with the file, not only that no row could be read
        raise DataError("no readable row", Location(path), "at least one JSON object row")
    fmt = formats.detect(first.value.keys())
    if fmt is None:
        raise formats.undetectable(first.value.keys(), first.where)
    return fmt, list(keys)
