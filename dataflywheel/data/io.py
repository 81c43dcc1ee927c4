"""The data layer's one entry point: read any supported file into canonical rows, write them back.

Three modules do the work, one job each: ``readers`` (files as raw rows, format detection),
``canonical`` (raw rows into canonical Arrow batches: ids, lineage, shards) and ``writer`` (back out in
any format). Callers import ``io`` and use the names below.
"""

from __future__ import annotations

from dataflywheel.data.canonical import (
    Dropped,
    ReadBatch,
    ReadResult,
    concat,
    read_all,
    read_canonical,
    rows_to_table,
    source_name,
)
from dataflywheel.data.readers import CSV_JSON_FIELDS, RawRow, detect_format, iter_raw, kind_of
from dataflywheel.data.writer import WRITE_KINDS, Writer, kind_of_output

__all__ = [
    "CSV_JSON_FIELDS",
    "WRITE_KINDS",
    "Dropped",
    "RawRow",
    "ReadBatch",
    "ReadResult",
    "Writer",
    "concat",
    "detect_format",
    "iter_raw",
    "kind_of",
    "kind_of_output",
    "read_all",
    "read_canonical",
    "rows_to_table",
    "source_name",
]
