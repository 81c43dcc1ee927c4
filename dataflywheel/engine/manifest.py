"""manifest.json: what ran, with which versions, how long, and where every row went."""

from __future__ import annotations

import platform
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from dataflywheel.engine.store import atomic_write_bytes, atomic_write_json

PACKAGES = (
    "dataflywheel",
    "pyarrow",
    "datasets",
    "pydantic",
    "numpy",
    "torch",
    "transformers",
    "sentence-transformers",
    "trl",
    "peft",
    "vllm",
    "ray",
)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


class Manifest:
    """Written atomically after every step, so even a killed run leaves an honest account."""

    def __init__(self, run_dir: Path, recipe: Any):
        self.path = run_dir / "manifest.json"
        atomic_write_bytes(
            run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False).encode()
        )
        self.data: dict[str, Any] = {
            "name": recipe.name,
            "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "finished": None,
            "versions": versions(),
            "inputs": [
                {"path": recipe.input_path(s), "format": s.format, "name": s.name} for s in recipe.inputs
            ],
            "steps": [],
            "output": None,
        }
        self._t0 = time.perf_counter()
        self._save()

    def step_finished(self, result: Any) -> None:
        entry = asdict(result)
        entry["dir"] = str(Path(entry["dir"]).relative_to(self.path.parent))
        self.data["steps"].append(entry)
        self._save()

    def finish(self, output: Path | None, rows_out: int, models: dict | None = None) -> None:
        steps = self.data["steps"]
        self.data.update(
            status="finished",
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            seconds=round(time.perf_counter() - self._t0, 3),
            output={"path": str(output) if output else None, "rows": rows_out},
            totals={
                "rows_read": steps[0]["rows_in"] if steps else 0,
                "rows_dropped": sum(sum(s["dropped"].values()) for s in steps),
                "rows_out": rows_out,
            },
            models=models or {},
        )
        metrics = {
            f"{s['index']:02d}-{s['op']}" + (f"@{s['iteration']}" if s.get("iteration") else ""): s["stats"][
                "metrics"
            ]
            for s in steps
            if "metrics" in s.get("stats", {})
        }
        if metrics:
            atomic_write_json(self.path.parent / "metrics.json", metrics)
        self._save()

    def stopped(self, details: dict, models: dict | None = None) -> None:
        """The run stopped before its end (its budget was spent): what it finished stays accounted for."""
        self.data.update(
            status="stopped",
            stopped=details,
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            seconds=round(time.perf_counter() - self._t0, 3),
            models=models or {},
        )
        self._save()

    def _save(self) -> None:
        atomic_write_json(self.path, self.data)
