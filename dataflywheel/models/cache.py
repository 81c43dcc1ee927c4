"""The persistent call cache: SQLite in WAL mode, keyed by the model's fingerprint and the full request.

A rerun or a resumed run pays for nothing twice. Several processes may read and write at once (WAL lets
readers run beside one writer; writers wait on a busy timeout). Only deterministic requests are stored:
greedy or seeded generation, log-probabilities and embeddings.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import xxhash

MODES = ("read_write", "read_only", "off")


def default_path() -> Path:
    from dataflywheel.models.embedded import home

    return Path(os.environ.get("FLYWHEEL_CACHE", home() / "calls.sqlite"))


class CallCache:
    def __init__(self, path: str | Path | None = None, mode: str = "read_write"):
        if mode not in MODES:
            raise ValueError(f"cache mode '{mode}' is not one of {MODES}")
        self.mode = mode
        self.path = Path(path) if path else default_path()
        self._local = threading.local()
        if mode != "off":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._conn() as conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value BLOB NOT NULL, "
                    "created REAL NOT NULL)"
                )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @staticmethod
    def key(fingerprint: str, kind: str, request: Any) -> str:
        return xxhash.xxh3_128_hexdigest(
            orjson.dumps([fingerprint, kind, request], option=orjson.OPT_SORT_KEYS)
        )

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        if self.mode == "off" or not keys:
            return {}
        out: dict[str, Any] = {}
        conn = self._conn()
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for k, v in conn.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk):
                out[k] = orjson.loads(v)
        return out

    def put_many(self, items: dict[str, Any]) -> None:
        if self.mode != "read_write" or not items:
            return
        now = time.time()
        rows = [(k, orjson.dumps(v), now) for k, v in items.items()]
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR REPLACE INTO calls (key, value, created) VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        if self.mode == "off":
            return 0
        return self._conn().execute("SELECT COUNT(*) FROM calls").fetchone()[0]
