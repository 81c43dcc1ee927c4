"""Fingerprints address each step's output: same input, op, parameters, models and code -> same folder."""

from __future__ import annotations

import inspect
import os
from functools import cache
from pathlib import Path

import xxhash

import dataflywheel
from dataflywheel.hashing import digest

# Bump when the engine changes what it writes for the same op (lineage, shard layout, drop log).
ENGINE_FORMAT = 1


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
