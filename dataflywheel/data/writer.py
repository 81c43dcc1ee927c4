"""Writing canonical rows back in any format and file kind, atomically."""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path

import orjson
import pyarrow as pa

from dataflywheel.data import formats
from dataflywheel.data import schema as S
from dataflywheel.data.canonical import concat, rows_to_table
from dataflywheel.errors import DataError, Location

WRITE_KINDS = ("jsonl", "json", "parquet", "csv")


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
            # a path ending in .gz is written gzip-compressed, as the readers expect it
            self._fh = gzip.open(self.tmp, "wb") if self.path.endswith(".gz") else open(self.tmp, "wb")
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
