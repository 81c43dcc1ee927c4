"""The local executor: the recipe's steps in this process, shard after shard; selector views gathered
with threads (the feature kernels release the GIL)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from dataflywheel.data import io
from dataflywheel.engine.executor import Executor, RunResult, StepResult
from dataflywheel.engine.kernels import process_shard, shard_view
from dataflywheel.engine.store import StepStore
from dataflywheel.ops.base import Op, Selector

__all__ = ["LocalExecutor", "RunResult", "StepResult"]


class LocalExecutor(Executor):
    """Runs a validated recipe with its built ops in this process."""

    def run_shards(self, op: Op, pending: list[tuple[int, Path]], store: StepStore, task) -> None:
        for k, shard in pending:
            self.check_budget()  # a spent budget stops between shards: finished ones are kept
            process_shard(op, shard, store, k)
            task.advance()

    def view(self, op: Selector, inputs: list[Path], cols: list[str]) -> pa.Table:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(len(inputs), os.cpu_count() or 1)) as pool:
            return io.concat(list(pool.map(lambda p: shard_view(op, p, cols), inputs)))
