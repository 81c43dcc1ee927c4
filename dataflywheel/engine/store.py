"""A step's folder of Parquet shards: atomic writes, completion markers, and the drop log beside them.

Layout of one step folder::

    shard-00000.parquet    output rows of input shard 0 (written last, so its presence means done)
    drops-00000.parquet    rows that shard dropped, with op and reason (written before the shard)
    stats-00000.json       the op's counts for that shard (requests, unparsed replies, ...), if any
    _done.json             the step is complete; holds its statistics

A shard is written to a temporary name and renamed, so a killed run leaves either a whole shard or none.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

DROP_SCHEMA = pa.schema(
    [
        pa.field("step", pa.int32()),
        pa.field("op", pa.string()),
        pa.field("id", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("row", pa.string()),
    ]
)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, obj: object) -> None:
    atomic_write_bytes(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2, default=str))


def write_table(path: str | Path, table: pa.Table) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def drop_rows(
    step: int, op: str, rows: list[dict], reasons: list[str], details: list[str | None] | None = None
) -> pa.Table:
    """Drop-log records for whole canonical rows (the row itself is kept as JSON, so nothing is lost)."""
    return pa.table(
        {
            "step": pa.array([step] * len(rows), pa.int32()),
            "op": pa.array([op] * len(rows), pa.string()),
            "id": pa.array([r.get("id") for r in rows], pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "detail": pa.array(details or [None] * len(rows), pa.string()),
            "row": pa.array([orjson.dumps(r, default=str).decode() for r in rows], pa.string()),
        },
        schema=DROP_SCHEMA,
    )


class StepStore:
    """The folder of one step's checkpointed output."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def prepare(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        for tmp in glob.glob(str(self.path / "*.tmp-*")):
            os.remove(tmp)  # left by a killed run: never complete

    def shard_path(self, k: int) -> Path:
        return self.path / f"shard-{k:05d}.parquet"

    def drops_path(self, k: int) -> Path:
        return self.path / f"drops-{k:05d}.parquet"

    def has_shard(self, k: int) -> bool:
        return self.shard_path(k).exists()

    def stats_path(self, k: int) -> Path:
        return self.path / f"stats-{k:05d}.json"

    def write_shard(
        self, k: int, table: pa.Table, drops: pa.Table | None = None, stats: dict | None = None
    ) -> None:
        """Shard k with its drop log and the op's counts for it; the shard itself is written last."""
        if drops is not None and drops.num_rows:
            write_table(self.drops_path(k), drops)
        elif self.drops_path(k).exists():
            os.remove(self.drops_path(k))
        if stats:
            atomic_write_json(self.stats_path(k), stats)
        elif self.stats_path(k).exists():
            os.remove(self.stats_path(k))
        write_table(self.shard_path(k), table)

    def failed_shards(self) -> list[int]:
        """Shards whose model calls failed (their counts say ``failed_calls``)."""
        out = []
        for f in sorted(self.path.glob("stats-*.json")):
            if orjson.loads(f.read_bytes()).get("failed_calls"):
                out.append(int(f.stem.split("-")[1]))
        return out

    def remove_shard(self, k: int) -> None:
        for p in (self.shard_path(k), self.drops_path(k), self.stats_path(k)):
            if p.exists():
                os.remove(p)

    def op_counts(self) -> dict[str, int]:
        """The op's counts (requests, unparsed replies, ...) summed over the finished shards."""
        total: Counter = Counter()
        for f in sorted(self.path.glob("stats-*.json")):
            if self.shard_path(int(f.stem.split("-")[1])).exists():
                total.update(orjson.loads(f.read_bytes()))
        return dict(sorted(total.items()))

    def shards(self) -> list[Path]:
        return sorted(self.path.glob("shard-*.parquet"))

    def drop_files(self) -> list[Path]:
        return sorted(self.path.glob("drops-*.parquet"))

    @property
    def done_path(self) -> Path:
        return self.path / "_done.json"

    def is_done(self) -> bool:
        return self.done_path.exists()

    def mark_done(self, stats: dict) -> None:
        atomic_write_json(self.done_path, stats)

    def done_stats(self) -> dict:
        return orjson.loads(self.done_path.read_bytes())

    def row_counts(self) -> list[int]:
        return [pq.read_metadata(p).num_rows for p in self.shards()]

    def drop_reasons(self) -> dict[str, int]:
        counts: Counter = Counter()
        for f in self.drop_files():
            counts.update(pq.read_table(f, columns=["reason"]).column("reason").to_pylist())
        return dict(counts.most_common())

    def read_drops(self) -> pa.Table:
        files = self.drop_files()
        return pa.concat_tables([pq.read_table(f) for f in files]) if files else DROP_SCHEMA.empty_table()
