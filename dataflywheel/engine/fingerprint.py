"""Fingerprints address each step's output: same input, op, parameters, models and code -> same folder."""

from __future__ import annotations

import inspect
import os
from functools import cache
from pathlib import Path

import orjson
import xxhash

import dataflywheel

# Bump when the engine changes what it writes for the same op (lineage, shard layout, drop log).
ENGINE_FORMAT = 1


def digest(*parts: object) -> str:
    h = xxhash.xxh3_128()
    for p in parts:
        h.update(orjson.dumps(p, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str))
        h.update(b"\x00")
    return h.hexdigest()


def file_digest(path: str) -> str:
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


@cache
def code_version(obj: type | None = None) -> str:
    """Package version, engine format and the source of the op's module, so an edited op reruns."""
    source = b""
    if obj is not None:
        try:
            source = Path(inspect.getsourcefile(obj)).read_bytes()
        except (TypeError, OSError):
            source = obj.__qualname__.encode()
    data_dir = Path(__file__).resolve().parent.parent / "data"
    data_code = b"".join(
        (data_dir / f).read_bytes() for f in sorted(os.listdir(data_dir)) if f.endswith(".py")
    )
    return digest(dataflywheel.__version__, ENGINE_FORMAT, xxhash.xxh3_64_hexdigest(source + data_code))
