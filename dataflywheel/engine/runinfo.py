"""Reading a finished (or interrupted) run directory back."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa

from dataflywheel.engine.store import DROP_SCHEMA, StepStore
from dataflywheel.errors import FlywheelError


def load_manifest(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "manifest.json"
    if not path.exists():
        raise FlywheelError(f"{run_dir} is not a run directory (no manifest.json)")
    return orjson.loads(path.read_bytes())


def drop_log(run_dir: str | Path) -> pa.Table:
    """All rows dropped by the steps of the run's last recipe, in step order."""
    manifest = load_manifest(run_dir)
    tables = [StepStore(Path(run_dir) / s["dir"]).read_drops() for s in manifest["steps"]]
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else DROP_SCHEMA.empty_table()
