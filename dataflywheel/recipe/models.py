"""The recipe schema. YAML is data: nothing in a recipe is ever executed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from dataflywheel.models.spec import ModelSpec
from dataflywheel.paths import expand_path

__all__ = ["InputSpec", "ModelSpec", "OutputSpec", "RaySpec", "Recipe", "StepSpec", "expand_path"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Strict):
    path: str = Field(
        description="jsonl/json/parquet/csv file, a saved HF dataset folder, or hf://name[:split]"
    )
    format: str = Field("auto", description="input format, or auto to detect it from the fields")
    name: str | None = Field(
        None, description="source name written to the origin column (default: file stem)"
    )
    split: str | None = Field(None, description="split of a saved DatasetDict or a hub dataset")
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="format field -> the file's name for it: {instruction: question, output: answer}",
    )
    on_error: Literal["raise", "skip"] | None = Field(None, description="overrides the recipe's on_error")
    limit: int | None = Field(
        None, ge=1, description="read at most this many rows (a quick trial; `flywheel plan` samples so)"
    )


class RunBudget(_Strict):
    """What a run may spend on model calls, over every invocation on its run directory; at the limit the
    run stops between shards, keeping what it finished, and goes on when rerun with a higher limit."""

    cost: float | None = Field(None, ge=0, description="money at the models' prices")
    tokens: int | None = Field(None, ge=0, description="prompt + completion tokens of all models")


class OutputSpec(_Strict):
    path: str | None = Field(None, description="output file; relative paths are inside the run directory")
    format: str = Field(
        "messages", description="messages, sharegpt, alpaca, preference, prompt_completion ..."
    )
    keep_columns: bool = Field(True, description="also write id, scores, tags and lineage columns")


class StepSpec(_Strict):
    op: str
    params: dict[str, Any] = Field(default_factory=dict)


class RaySpec(_Strict):
    """Where and how wide a recipe runs with ``executor: ray``."""

    address: str | None = Field(
        None, description='a running cluster ("auto", "ray://head:10001"); unset: start one on this machine'
    )
    workers: int | None = Field(
        None, ge=1, description="parallel tasks or actors per step (default: all CPUs)"
    )
    gpus_per_model_actor: float = Field(
        0, ge=0, description="GPUs each model-backed actor reserves (0: one if its model asks for cuda)"
    )


class Recipe(_Strict):
    version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="names the run directory")
    description: str = ""
    inputs: list[InputSpec] = Field(min_length=1)
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(default_factory=list)
    output: OutputSpec = Field(default_factory=OutputSpec)
    on_error: Literal["raise", "skip"] = Field("raise", description="bad input rows: stop, or log and skip")
    shard_size: int = Field(10_000, ge=1, description="rows per checkpointed shard")
    seed: int = Field(0, description="default seed of every seeded op")
    executor: Literal["local", "ray"] = Field("local", description="run in this process, or on Ray")
    ray: RaySpec = Field(default_factory=RaySpec)
    budget: RunBudget = Field(default_factory=RunBudget, description="model spending at most")

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def output_path(self, run_dir: str | Path) -> Path:
        """Where the output lands: a relative path inside the run directory, an absolute one as written."""
        path = Path(expand_path(self.output.path)) if self.output.path else Path("output.jsonl")
        return path if path.is_absolute() else Path(run_dir) / path

    def input_path(self, spec: InputSpec) -> str:
        """Inputs are relative to the recipe file, so a recipe runs the same from any directory."""
        path = expand_path(spec.path)
        if path.startswith("hf://") or os.path.isabs(path):
            return path
        return str((self._base_dir / path).resolve())
