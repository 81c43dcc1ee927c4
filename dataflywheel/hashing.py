"""Content hashes (the ground floor: every layer may use them). Fingerprints of steps, models and calls
are built from these."""

from __future__ import annotations

from pathlib import Path

import orjson
import xxhash


def digest(*parts: object) -> str:
    """A 128-bit hex hash of JSON-serialisable parts (dict keys sorted, so order never matters)."""
    h = xxhash.xxh3_128()
    for p in parts:
        h.update(orjson.dumps(p, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str))
        h.update(b"\x00")
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """Content hash of a file or of every file in a folder (a saved HF dataset)."""
    h = xxhash.xxh3_128()
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 23):
                h.update(chunk)
    return h.hexdigest()
