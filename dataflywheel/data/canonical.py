"""Raw rows into canonical Arrow batches: conversion, ids, lineage, and the cut into shards."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import pyarrow as pa

from dataflywheel.data import formats
from dataflywheel.data import schema as S
from dataflywheel.data.readers import RawRow, detect_format, iter_raw, kind_of
from dataflywheel.errors import DataError, Location


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
    shard_size: int = 10_000,
    seen_ids: set | None = None,
    fields: dict[str, str] | None = None,
) -> Iterator[ReadBatch]:
    """Canonical rows in shards of `shard_size` items; bad rows raise (on_error='raise') or come back
    as drops ('skip').

    Ids: a given id is kept (a repeated one is an error); otherwise a hash of the content, with
    ``-2``, ``-3`` ... for repeats of the same content, so ids are unique and stable across runs.
    Valid JSON-lines and Parquet files of the common formats take the vectorized reader; the first block
    it is unsure of hands the rest of the file to the row-by-row reader.
    """
    from dataflywheel.data import arrow_read

    if fmt == "auto":
        fmt, _ = detect_format(path, split, fields=fields)
    elif fmt not in formats.FORMATS:
        raise DataError(f"unknown format '{fmt}'", Location(path), f"one of {list(formats.FORMATS)} or auto")
    origin = origin or source_name(path)
    seen = seen_ids if seen_ids is not None else set()
    chunker = _Chunker(shard_size)
    done = 0
    kind = kind_of(path)
    if arrow_read.supported(kind, fmt):
        try:
            for table in arrow_read.canonical_batches(path, kind, fmt, origin, seen, fields):
                done += table.num_rows
                yield from chunker.add(table)
        except arrow_read.NotFast:
            pass
        else:
            yield from chunker.flush()
            return
    rows: list[dict] = []
    dropped: list[Dropped] = []
    for n, raw in enumerate(iter_raw(path, split, fields)):
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
        if (n + 1) % shard_size == 0:  # cut at absolute positions, wherever the slow reader took over
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


def read_all(path: str, fmt: str = "auto", split: str | None = None, on_error: str = "raise") -> ReadResult:
    """The whole file at once as Python rows (for small data, tests and the CLI)."""
    out = ReadResult()
    for batch in read_canonical(path, fmt, split, on_error):
        out.rows += batch.rows
        out.dropped += batch.dropped
    return out
