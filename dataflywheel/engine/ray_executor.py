"""The Ray executor: the same recipe, the same checkpoints, the work spread over a Ray cluster.

The unit of work is a checkpoint shard, exactly as in the local executor, so outputs are identical and a
killed run resumes at its first missing shard whichever executor wrote the others:

* Row-wise ops (mappers, scorers, filters) run as Ray Data ``map_batches`` over the step's pending shards.
  Ops without a model run as stateless tasks; ops with a model run on an actor pool, so each actor loads
  its model once (``ray.gpus_per_model_actor`` GPUs and one CPU per actor). Each task reads its shard,
  applies the op batch by batch and writes its output shard and drop log atomically.
* Selectors gather only their declared columns. Per-row preparation a selector declares
  (``shard_features``, e.g. MinHash signatures) runs as parallel tasks; the global decision (LSH banding
  and connected components, k-center, sorting) runs once on the driver.
* Generators run like row-wise ops (seed shard k -> output shard k), each shard with its share of the
  budget, which the driver splits before the step starts.
* Reading the inputs, trainers and evaluators run on the driver.

The run directory must be on storage every node can reach (one machine, NFS, a mounted bucket).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataflywheel.data import io
from dataflywheel.engine.executor import Executor
from dataflywheel.engine.kernels import process_shard, read_view_columns
from dataflywheel.engine.store import StepStore
from dataflywheel.errors import FlywheelError
from dataflywheel.ops.base import Op, OpContext, Selector

# Environment a worker needs to find the same models and caches as the driver.
FORWARDED_ENV = ("FLYWHEEL_HOME", "FLYWHEEL_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def init_ray(address: str | None = None, workers: int | None = None) -> None:
    """Connect to ``address`` (a running cluster: "auto", "ray://head:10001"), or start a local instance
    with ``workers`` CPUs; reuse an instance this process already started."""
    try:
        import ray
    except ImportError:
        raise FlywheelError("the ray executor needs Ray: pip install 'dataflywheel[ray]'") from None
    if ray.is_initialized():
        return
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    kwargs: dict[str, Any] = {
        "runtime_env": {"env_vars": env},
        "include_dashboard": False,
        "logging_level": "warning",
    }
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=workers, **kwargs)


def _op_payload(op: Op) -> Op:
    """A fresh copy of the op with its parameters and context but no loaded state and no models: what a
    worker rebuilds its own op from."""
    base = os.path.abspath(op.ctx.base_dir) if op.ctx.base_dir else None
    ctx = OpContext(seed=op.ctx.seed, step=op.ctx.step, iteration=op.ctx.iteration, base_dir=base)
    fresh = type(op)(op.params, ctx)
    fresh.name = op.name  # the registry names the class on the driver only; lineage needs it on workers
    if hasattr(op, "shares"):  # a generator's budget, split over the seed shards by the driver
        fresh.shares = op.shares
    return fresh


def _shards(batch: Any) -> list[tuple[int, Path]]:
    """(shard index, path) pairs of a batch of the shards dataset, whatever its batch format."""
    if isinstance(batch, pa.Table):
        ks, paths = batch.column("k").to_pylist(), batch.column("path").to_pylist()
    else:
        ks, paths = batch["k"].tolist(), batch["path"].tolist()
    return [(int(k), Path(p)) for k, p in zip(ks, paths, strict=True)]


def _usage_delta(models: dict, before: dict) -> str:
    return orjson.dumps({n: m.usage.minus(before[n]).as_dict() for n, m in models.items()}).decode()


class _ShardWorker:
    """An actor of a model-backed step: builds the op and its models once, then processes shards."""

    def __init__(self, op: Op, specs: dict, store: str):
        from dataflywheel.models.client import Model

        op.ctx.models = {name: Model(name, spec) for name, spec in specs.items()}
        op.setup()
        self.op, self.store = op, StepStore(store)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        models = self.op.ctx.models
        before = {n: m.usage.copy() for n, m in models.items()}
        rows = [process_shard(self.op, p, self.store, k) for k, p in _shards(batch)]
        usage = _usage_delta(models, before)
        return {
            "k": np.asarray(batch["k"]),
            "rows": np.asarray(rows),
            "usage": np.asarray([usage] * len(rows)),
        }


def _shard_task(batch: dict[str, np.ndarray], op: Op, store: str) -> dict[str, np.ndarray]:
    """A task of a step without a model: set the op up and process the shards of this batch."""
    op.setup()
    st = StepStore(store)
    rows = [process_shard(op, p, st, k) for k, p in _shards(batch)]
    return {"k": np.asarray(batch["k"]), "rows": np.asarray(rows), "usage": np.asarray(["{}"] * len(rows))}


def _features_task(batch: pa.Table, op: Op, cols: list[str]) -> pa.Table:
    """A selector's per-shard features (MinHash signatures, band keys) for the shards of this batch, and
    nothing else: the driver reads the declared columns itself, so texts never cross the object store."""
    parts = []
    for k, p in _shards(batch):
        table = pq.read_table(p, columns=[c for c in cols if c in pq.read_schema(p).names])
        features = pa.table(op.shard_features(table) or {})
        parts.append(
            features.append_column("_shard", pa.array(np.full(table.num_rows, int(k), dtype=np.int64)))
        )
    return io.concat(parts)


class RayExecutor(Executor):
    """Runs a validated recipe on Ray; see the module docstring for what runs where."""

    def __init__(
        self,
        *args: Any,
        address: str | None = None,
        workers: int | None = None,
        gpus_per_model_actor: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.run_dir = self.run_dir.resolve()  # workers do not share the driver's working directory
        spec = self.recipe.ray
        self.address = address if address is not None else spec.address
        self.workers = workers if workers is not None else spec.workers
        self.gpus = gpus_per_model_actor if gpus_per_model_actor is not None else spec.gpus_per_model_actor

    def run(self, fresh: bool = False):
        init_ray(self.address, self.workers)
        import logging

        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        return super().run(fresh)

    def _parallelism(self) -> int:
        import ray

        if self.workers:
            return self.workers
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def _gpus(self, specs: dict) -> float:
        """GPUs per model actor: the recipe's setting, else one when a model asks for a CUDA device."""
        if self.gpus:
            return self.gpus
        return 1.0 if any(sp.device.startswith("cuda") for sp in specs.values()) else 0.0

    def _shards_dataset(self, pending: list[tuple[int, Path]]):
        import ray.data

        items = [{"k": k, "path": str(p)} for k, p in pending]
        return ray.data.from_items(items, override_num_blocks=len(items))

    def run_shards(self, op: Op, pending: list[tuple[int, Path]], store: StepStore, task) -> None:
        import ray.data

        ds = self._shards_dataset(pending)
        refs = op.model_refs()
        workers = min(self._parallelism(), len(pending))
        if refs:
            driver_models = op.ctx.models
            specs = {name: driver_models[name].spec for name in refs.values()}
            out = ds.map_batches(
                _ShardWorker,
                fn_constructor_kwargs={"op": _op_payload(op), "specs": specs, "store": str(store.path)},
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=1,
                num_gpus=self._gpus(specs),
            )
        else:
            out = ds.map_batches(
                _shard_task,
                fn_kwargs={"op": _op_payload(op), "store": str(store.path)},
                batch_size=1,
                compute=ray.data.TaskPoolStrategy(size=workers),
                num_cpus=1,
            )
        for row in out.iter_rows():
            for name, delta in orjson.loads(row["usage"]).items():
                _add_usage(op.ctx.models[name].usage, delta)
            task.advance()

    def view(self, op: Selector, inputs: list[Path], cols: list[str]) -> pa.Table:
        """The declared columns, read by the driver; per-shard features (if the selector has any) computed
        by parallel tasks that return only the features."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(len(inputs), os.cpu_count() or 1)) as pool:
            tables = list(pool.map(lambda p: read_view_columns(p, cols), inputs))
        view = io.concat(tables)
        if type(op).shard_features is Selector.shard_features:
            return view  # only reading columns: nothing to compute
        import ray
        import ray.data

        ds = self._shards_dataset(list(enumerate(inputs)))
        out = ds.map_batches(
            _features_task,
            fn_kwargs={"op": _op_payload(op), "cols": cols},
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.TaskPoolStrategy(size=min(self._parallelism(), len(inputs))),
            num_cpus=1,
        )
        features = io.concat(ray.get(list(out.to_arrow_refs())))
        order = pc.sort_indices(features, [("_shard", "ascending")])  # stable: rows keep their shard order
        features = features.take(order).drop_columns(["_shard"])
        for name in features.column_names:
            view = view.append_column(name, features.column(name))
        return view


def _add_usage(usage: Any, delta: dict) -> None:
    for key, value in delta.items():
        setattr(usage, key, getattr(usage, key) + value)
