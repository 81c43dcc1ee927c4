"""The Ray executor: the same recipe, the same checkpoints, the work spread over a Ray cluster.

The unit of work is a checkpoint shard, exactly as in the local executor, so outputs are identical and a
killed run resumes at its first missing shard whichever executor wrote the others:

* Row-wise ops (mappers, scorers, filters) run as Ray tasks, one per pending shard, at most ``workers`` in
  flight. Ops with a model run on a pool of actors, so each actor loads its model once
  (``ray.gpus_per_model_actor`` GPUs and one CPU per actor) and takes the next shard when it finishes one.
  Each task reads its shard, applies the op batch by batch and writes its output shard, drop log and
  counts atomically. (Plain tasks, not Ray Data's map_batches: measured faster here, BENCHMARKS.md.)
* Selectors: the driver reads their declared columns. Per-row preparation a selector declares
  (``shard_features``, e.g. MinHash signatures) runs as parallel tasks that return only the features; the
  global decision (LSH banding and connected components, k-center, sorting) runs once on the driver.
* Generators run like row-wise ops (seed shard k -> output shard k), each shard with its share of the
  budget, which the driver splits before the step starts.
* Reading the inputs, trainers and evaluators run on the driver.

The run directory must be on storage every node can reach (one machine, NFS, a mounted bucket).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

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
    ctx = OpContext(
        seed=op.ctx.seed,
        step=op.ctx.step,
        iteration=op.ctx.iteration,
        base_dir=base,
        checkpoints=dict(op.ctx.checkpoints),
    )
    fresh = type(op)(op.params, ctx)
    fresh.name = op.name  # the registry names the class on the driver only; lineage needs it on workers
    if hasattr(op, "shares"):  # a generator's budget, split over the seed shards by the driver
        fresh.shares = op.shares
    return fresh


def _usage_delta(models: dict, before: dict) -> str:
    return orjson.dumps({n: m.usage.minus(before[n]).as_dict() for n, m in models.items()}).decode()


class _ShardActor:
    """An actor of a model-backed step: builds the op and its models once, then processes shards."""

    def __init__(self, op: Op, specs: dict, store: str):
        from dataflywheel.models.client import Model

        op.ctx.models = {name: Model(name, spec) for name, spec in specs.items()}
        op.setup()
        self.op, self.store = op, StepStore(store)

    def process(self, k: int, shard: str) -> tuple[int, int, str]:
        models = self.op.ctx.models
        before = {n: m.usage.copy() for n, m in models.items()}
        rows = process_shard(self.op, Path(shard), self.store, k)
        return k, rows, _usage_delta(models, before)


def _shard_task(op: Op, store: str, k: int, shard: str) -> tuple[int, int, str]:
    """A task of a step without a model: set the op up and process one shard."""
    op.setup()
    return k, process_shard(op, Path(shard), StepStore(store), k), "{}"


def _features_task(op: Op, cols: list[str], shard: str) -> pa.Table:
    """A selector's per-shard features (MinHash signatures, band keys) of one shard, and nothing else: the
    driver reads the declared columns itself, so texts never cross the object store."""
    return pa.table(op.shard_features(read_view_columns(Path(shard), cols)) or {})


class RayExecutor(Executor):
    """Runs a validated recipe on Ray; see the module docstring for what runs where."""

    enforces_budget = False

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

    def run_shards(self, op: Op, pending: list[tuple[int, Path]], store: StepStore, task) -> None:
        """One Ray task per shard (at most ``workers`` in flight), or for an op with a model a pool of
        actors that load it once, each given the next shard as it finishes one. Plain Ray tasks, not Ray
        Data: measured 1.15x (one worker) to 1.3x (two) faster on this step (BENCHMARKS.md)."""
        import ray

        workers = min(self._parallelism(), len(pending))
        payload = ray.put(_op_payload(op))
        todo = list(pending)
        refs = op.model_refs()
        if refs:
            specs = {name: op.ctx.models[name].spec for name in refs.values()}
            actor_cls = ray.remote(num_cpus=1, num_gpus=self._gpus(specs))(_ShardActor)
            actors = [actor_cls.remote(payload, specs, str(store.path)) for _ in range(workers)]

            def submit(worker: int):
                k, shard = todo.pop(0)
                return actors[worker].process.remote(k, str(shard))
        else:
            remote = ray.remote(num_cpus=1)(_shard_task)

            def submit(worker: int):
                k, shard = todo.pop(0)
                return remote.remote(payload, str(store.path), k, str(shard))

        running = {submit(w): w for w in range(workers)}
        try:
            while running:
                (done,), _ = ray.wait(list(running), num_returns=1)
                worker = running.pop(done)
                _, _, usage = ray.get(done)
                for name, delta in orjson.loads(usage).items():
                    _add_usage(op.ctx.models[name].usage, delta)
                task.advance()
                if todo:
                    running[submit(worker)] = worker
        finally:
            if refs:
                for actor in actors:
                    ray.kill(actor)

    def view(self, op: Selector, inputs: list[Path], cols: list[str]) -> pa.Table:
        """The declared columns, read by the driver; per-shard features (if the selector has any) computed
        by Ray tasks that return only the features, while the driver, which waits for them anyway,
        computes features of shards from the other end of the list."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(len(inputs), os.cpu_count() or 1)) as pool:
            view = io.concat(list(pool.map(lambda p: read_view_columns(p, cols), inputs)))
        if type(op).shard_features is Selector.shard_features:
            return view  # only reading columns: nothing to compute
        features = io.concat(self._features(op, inputs, cols))
        for name in features.column_names:
            view = view.append_column(name, features.column(name))
        return view

    def _features(self, op: Selector, inputs: list[Path], cols: list[str]) -> list[pa.Table]:
        import threading
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        import ray

        payload = ray.put(_op_payload(op))
        remote = ray.remote(num_cpus=1)(_features_task)
        todo, lock, out = deque(enumerate(inputs)), threading.Lock(), {}

        def take(front: bool) -> tuple[int, Path] | None:
            with lock:
                return (todo.popleft() if front else todo.pop()) if todo else None

        def driver_share() -> None:
            while (item := take(front=False)) is not None:
                out[item[0]] = _features_task(op, cols, str(item[1]))

        with ThreadPoolExecutor(max_workers=1) as helper:
            helping = helper.submit(driver_share)
            running = {}
            for _ in range(self._parallelism()):
                if (item := take(front=True)) is not None:
                    running[remote.remote(payload, cols, str(item[1]))] = item[0]
            while running:
                (done,), _ = ray.wait(list(running), num_returns=1)
                out[running.pop(done)] = ray.get(done)
                if (item := take(front=True)) is not None:
                    running[remote.remote(payload, cols, str(item[1]))] = item[0]
            helping.result()
        return [out[k] for k in range(len(inputs))]


def _add_usage(usage: Any, delta: dict) -> None:
    for key, value in delta.items():
        setattr(usage, key, getattr(usage, key) + value)
