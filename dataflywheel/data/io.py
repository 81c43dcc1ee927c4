"""Read any supported file into canonical rows, and write canonical rows back in any format.

Readers: jsonl (and .jsonl.gz), json (an array; .json.gz), parquet, csv, a folder saved by
``datasets.save_to_disk``, and ``hf://name[:split]`` through ``datasets`` where the Hub is reachable.
Every problem names the file, the line (text formats) or row (columnar formats), and the field.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from dataflywheel.data import formats
from dataflywheel.data import schema as S
from dataflywheel.errors import DataError, Location

WRITE_KINDS = ("jsonl", "json", "parquet", "csv")
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


@dataclass
class Dropped:
    """A row that did not make it, with where it came from and why (for the drop log)."""

    reason: str
    detail: str
    row: str
    id: str | None = None


@dataclass
class ReadResult:
    rows: list[dict] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)


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
        for lineno, raw in enumerate(fh, start=1):
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
    with _open_bytes(path) as fh:
        raw = fh.read()
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


def _iter_csv(path: str) -> Iterator[RawRow]:
    with _open_bytes(path) as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as u:
        line = raw.count(b"\n", 0, u.start) + 1
        raise DataError(
            "invalid UTF-8", Location(path, line=line), "UTF-8 text", f"byte 0x{raw[u.start]:02x}"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    start = 2
    for rec in reader:
        where = Location(path, line=start)
        start = reader.line_num + 1
        if None in rec:
            yield RawRow(
                where,
                error=DataError("too many cells", where, f"{len(reader.fieldnames)} columns"),
                text=str(rec),
            )
            continue
        yield RawRow(where, {k: _csv_cell(k, v) for k, v in rec.items() if v is not None})


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


def iter_raw(path: str, split: str | None = None) -> Iterator[RawRow]:
    """Every row of a file as found, in order; a bad row comes back with its error instead of raising."""
    kind = kind_of(path)
    if kind == "hf_hub":
        yield from _iter_hf(_load_hf_hub(path, split), path)
        return
    if not os.path.exists(path):
        raise DataError("file not found", Location(path), "an existing file or folder")
    if kind == "hf_disk":
        yield from _iter_hf(_load_hf_disk(path, split), path)
    else:
        yield from {"jsonl": _iter_jsonl, "json": _iter_json, "parquet": _iter_parquet, "csv": _iter_csv}[
            kind
        ](path)


def detect_format(path: str, split: str | None = None, peek: int = 20) -> tuple[str, list[str]]:
    """The format of a file from its first good rows, and the fields seen in them."""
    keys: dict[str, None] = {}
    first: RawRow | None = None
    for n, raw in enumerate(iter_raw(path, split)):
        if raw.error is None and isinstance(raw.value, dict):
            first = first or raw
            keys.update(dict.fromkeys(raw.value))
        if n + 1 >= peek:
            break
    if first is None:
        raise DataError("no readable row", Location(path), "at least one JSON object row")
    fmt = formats.detect(first.value.keys())
    if fmt is None:
        raise formats.undetectable(first.value.keys(), first.where)
    return fmt, list(keys)


def _drop(reason: str, detail: str, raw: RawRow) -> Dropped:
    if raw.text is not None:
        text = raw.text
    else:
        try:
            text = orjson.dumps(raw.value, default=str).decode()
        except TypeError:
            text = repr(raw.value)
    return Dropped(reason=reason, detail=detail, row=text)


@dataclass
class ReadBatch:
    """A batch of canonical rows as an Arrow table, with the raw rows dropped on the way."""

    table: pa.Table
    dropped: list[Dropped] = field(default_factory=list)

    @property
    def rows(self) -> list[dict]:
        return self.table.to_pylist()

    def __len__(self) -> int:
        return self.table.num_rows + len(self.dropped)


class _Chunker:
    """Re-cuts a stream of tables and drops into batches of exactly `size` items (rows + drops), so
    shard boundaries depend only on the input, never on which reader produced a block."""

    def __init__(self, size: int):
        self.size, self.tables, self.dropped, self.count = size, [], [], 0

    def add(self, table: pa.Table | None, dropped: list[Dropped] = ()) -> Iterator[ReadBatch]:
        if table is not None and table.num_rows:
            self.tables.append(table)
            self.count += table.num_rows
        self.dropped += dropped
        while self.count + len(self.dropped) >= self.size:
            yield self._take(self.size)

    def flush(self) -> Iterator[ReadBatch]:
        if self.count or self.dropped:
            yield self._take(self.count + len(self.dropped))

    def _take(self, n: int) -> ReadBatch:
        drops, self.dropped = self.dropped[:n], self.dropped[n:]
        want = n - len(drops)
        table = concat(self.tables) if self.tables else pa.table({})
        self.tables = [table.slice(want)] if table.num_rows > want else []
        self.count -= min(want, table.num_rows)
        return ReadBatch(S.order_columns(table.slice(0, want)), drops)


def read_canonical(
    path: str,
    fmt: str = "auto",
    split: str | None = None,
    on_error: str = "raise",
    origin: str | None = None,
    batch_rows: int = 10_000,
    seen_ids: set | None = None,
) -> Iterator[ReadBatch]:
    """Canonical rows in batches of `batch_rows` items; bad rows raise (on_error='raise') or come back
    as drops ('skip').

    Ids: a given id is kept (a repeated one is an error); otherwise a hash of the content, with
    ``-2``, ``-3`` ... for repeats of the same content, so ids are unique and stable across runs.
    Valid JSON-lines and Parquet files of the common formats take the vectorized reader; the first block
    it is unsure of hands the rest of the file to the row-by-row reader.
    """
    from dataflywheel.data import arrow_read

    if fmt == "auto":
        fmt, _ = detect_format(path, split)
    elif fmt not in formats.FORMATS:
        raise DataError(f"unknown format '{fmt}'", Location(path), f"one of {list(formats.FORMATS)} or auto")
    origin = origin or source_name(path)
    seen = seen_ids if seen_ids is not None else set()
    chunker = _Chunker(batch_rows)
    done = 0
    kind = kind_of(path)
    if arrow_read.supported(kind, fmt):
        try:
            for table in arrow_read.canonical_batches(path, kind, fmt, origin, seen):
                done += table.num_rows
                yield from chunker.add(table)
        except arrow_read.NotFast:
            pass
        else:
            yield from chunker.flush()
            return
    rows: list[dict] = []
    dropped: list[Dropped] = []
    for n, raw in enumerate(iter_raw(path, split)):
        if n < done:
            continue  # already read by the vectorized reader
        try:
            if raw.error is not None:
                raise raw.error
            row = formats.to_canonical(raw.value, fmt, raw.where)
            _lineage(row, origin, raw.where)
            _assign_id(row, seen, raw.where)
            rows.append(row)
        except DataError as e:
            if on_error != "skip":
                raise
            dropped.append(_drop(e.reason, e.describe(), raw))
        if (n + 1) % batch_rows == 0:  # cut at absolute positions, wherever the slow reader took over
            yield from chunker.add(rows_to_table(rows) if rows else None, dropped)
            rows, dropped = [], []
    yield from chunker.add(rows_to_table(rows) if rows else None, dropped)
    yield from chunker.flush()


def source_name(path: str) -> str:
    name = path.rstrip("/").split("/")[-1]
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".parquet", ".csv"):
        name = name.removesuffix(suffix)
    return name


def _lineage(row: dict, origin: str, where: Location) -> None:
    checks = ((S.ORIGIN, str, origin, "a string"), (S.ITERATION, int, 0, "an integer"))
    for key, typ, default, expected in checks:
        value = row.setdefault(key, default)
        if value is None:
            row[key] = default
        elif not isinstance(value, typ) or isinstance(value, bool):
            raise DataError(
                "wrong type", Location(where.path, where.line, where.row, key), expected, repr(value)
            )
    for key in (S.PARENTS, S.OPS):
        value = row.get(key)
        if value is None:
            row[key] = []
        elif not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise DataError(
                "wrong type",
                Location(where.path, where.line, where.row, key),
                "a list of strings",
                repr(value)[:60],
            )


def _assign_id(row: dict, seen: set, where: Location) -> None:
    given = row.get(S.ID)
    if given is not None:
        if given in seen:
            raise DataError(
                "duplicate id",
                Location(where.path, where.line, where.row, S.ID),
                "ids unique across all inputs",
                repr(given),
            )
        seen.add(given)
        return
    row[S.ID] = S.unique_id(S.content_id(row), seen)


# ----------------------------------------------------------------------------- arrow


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Canonical rows -> an Arrow table with the canonical types; extra fields are inferred.

    An extra field whose values mix types across rows is stored as JSON text, so nothing is lost.
    """
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    arrays, fields = [], []
    for name in names:
        values = [r.get(name) for r in rows]
        typ = S.KNOWN_TYPES.get(name)
        try:
            arr = pa.array(values, type=typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            if typ is not None:
                raise
            arr = pa.array(
                [None if v is None else orjson.dumps(v, default=str).decode() for v in values], pa.string()
            )
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def concat(tables: list[pa.Table]) -> pa.Table:
    """Concatenate shards whose inferred extra columns may differ (null vs string, missing columns)."""
    tables = [t for t in tables if t is not None]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")


# ----------------------------------------------------------------------------- writing


class Writer:
    """Streams canonical tables to one file in a format and a file kind, atomically (tmp then rename)."""

    def __init__(self, path: str, fmt: str = "messages", kind: str | None = None, keep_columns: bool = True):
        self.path, self.fmt, self.keep_columns = path, fmt, keep_columns
        self.kind = kind or kind_of_output(path)
        if self.kind not in WRITE_KINDS:
            raise DataError(f"cannot write '{self.kind}'", Location(path), f"one of {list(WRITE_KINDS)}")
        if fmt not in formats.FORMATS:
            raise DataError(
                f"unknown output format '{fmt}'", Location(path), f"one of {list(formats.WRITE_FORMATS)}"
            )
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.tmp = f"{path}.tmp-{os.getpid()}"
        self.rows = 0
        self._fh = None
        self._parquet = None
        self._csv = None
        self._schema = None

    def write_rows(self, rows: list[dict]) -> None:
        out = [formats.from_canonical(r, self.fmt, self.keep_columns) for r in rows]
        written_before = self.rows
        self.rows += len(out)
        if self.kind == "parquet":
            self._write_parquet(out)
            return
        self._open()
        if self.kind == "jsonl":
            self._fh.write(b"".join(orjson.dumps(r, default=str) + b"\n" for r in out))
        elif self.kind == "json":
            for k, r in enumerate(out):  # a comma before every row but the file's first
                self._fh.write((b",\n" if written_before + k else b"\n") + orjson.dumps(r, default=str))
        else:
            self._write_csv(out)

    def write_table(self, table: pa.Table) -> None:
        if self.fmt == "messages" and self.kind == "jsonl" and S.MESSAGES in table.column_names:
            # Canonical rows already are the messages format: skip the per-row conversion.
            if not self.keep_columns:
                table = table.select([S.MESSAGES])
            self._open()
            self._fh.write(b"".join(orjson.dumps(r, default=str) + b"\n" for r in table.to_pylist()))
            self.rows += table.num_rows
            return
        self.write_rows(table.to_pylist())

    def _open(self) -> None:
        if self._fh is None:
            self._fh = open(self.tmp, "wb")
            if self.kind == "json":
                self._fh.write(b"[")

    def _write_parquet(self, out: list[dict]) -> None:
        import pyarrow.parquet as pq

        table = rows_to_table(out)
        if self._parquet is None:
            self._schema = table.schema
            self._parquet = pq.ParquetWriter(self.tmp, self._schema)
        elif table.schema != self._schema:
            table = concat([self._schema.empty_table(), table]).cast(self._schema)
        self._parquet.write_table(table)

    def _write_csv(self, out: list[dict]) -> None:
        flat = [
            {k: (orjson.dumps(v).decode() if isinstance(v, list | dict) else v) for k, v in r.items()}
            for r in out
        ]
        if self._csv is None:
            names: dict[str, None] = {}
            for r in flat:
                names.update(dict.fromkeys(r))
            self._text = io.TextIOWrapper(self._fh, encoding="utf-8", newline="")
            self._csv = csv.DictWriter(self._text, fieldnames=list(names), extrasaction="raise")
            self._csv.writeheader()
        try:
            self._csv.writerows(flat)
        except ValueError as e:
            raise DataError(
                "rows with different fields cannot share one CSV header",
                Location(self.path),
                "write jsonl or parquet instead",
                str(e),
            ) from None

    def close(self) -> None:
        if self.kind == "parquet":
            if self._parquet is None:
                import pyarrow.parquet as pq

                pq.write_table(pa.table({}), self.tmp)
            else:
                self._parquet.close()
        else:
            self._open()
            if self.kind == "json":
                self._fh.write(b"\n]\n")
            if self._csv is not None:
                self._text.flush()
                self._text.detach()
            self._fh.close()
        os.replace(self.tmp, self.path)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            for h in (self._fh, self._parquet):
                if h is not None:
                    h.close()
            if os.path.exists(self.tmp):
                os.remove(self.tmp)


def kind_of_output(path: str) -> str:
    name = path.lower().removesuffix(".gz")
    for ext, kind in ((".jsonl", "jsonl"), (".json", "json"), (".parquet", "parquet"), (".csv", "csv")):
        if name.endswith(ext):
            return kind
    raise DataError(
        "unknown output file type", Location(path), "a path ending in .jsonl, .json, .parquet or .csv"
    )


def read_all(path: str, fmt: str = "auto", split: str | None = None, on_error: str = "raise") -> ReadResult:
    """The whole file at once as Python rows (for small data, tests and the CLI)."""
    out = ReadResult()
    for batch in read_canonical(path, fmt, split, on_error):
        out.rows += batch.rows
        out.dropped += batch.dropped
    return out
