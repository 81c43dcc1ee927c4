"""The local executor: runs a recipe step by step over checkpointed Parquet shards, in process.

Row-wise ops (Mapper, Scorer, Filter) stream shard by shard, so memory is bounded by a shard. A Selector
reads only the columns it declared, for all shards, decides, then the rows are taken shard by shard (or
gathered once when the selection reorders them). Every step's output lives in a folder named by its
fingerprint: a rerun reuses finished steps, and an interrupted step resumes at its first missing shard.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.engine import fingerprint as fp
from dataflywheel.engine.manifest import Manifest
from dataflywheel.engine.progress import Progress
from dataflywheel.engine.store import DROP_SCHEMA, StepStore, atomic_write_json, drop_rows, write_table
from dataflywheel.errors import FlywheelError
from dataflywheel.hashing import file_digest
from dataflywheel.models.client import load_models
from dataflywheel.ops.base import (
    CONTENT_COLUMNS,
    Evaluator,
    Filter,
    GenerationBudget,
    Generator,
    Loop,
    Mapper,
    Op,
    OpContext,
    Scorer,
    Selector,
    Trainer,
)
from dataflywheel.recipe.models import Recipe

ORIGIN_MODEL = "origin_model"  # the models a generator asked for a row (names from the recipe)


@dataclass
class StepResult:
    index: int
    op: str
    kind: str
    fingerprint: str
    dir: str
    status: str = "computed"  # computed | reused | resumed
    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    shards_reused: int = 0
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    iteration: int = 0  # the loop round a step ran in (0: not in a loop)


@dataclass
class RunResult:
    run_dir: Path
    output_path: Path | None
    steps: list[StepResult]
    rows_read: int
    rows_out: int

    @property
    def dropped_total(self) -> int:
        return sum(sum(s.dropped.values()) for s in self.steps)


class RunLock:
    """One run per run directory at a time; the OS releases the lock if the process dies."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"

    def __enter__(self) -> RunLock:
        self.fh = open(self.path, "w")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FlywheelError(f"another flywheel run is using {self.path.parent}") from None
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


class LocalExecutor:
    """Runs a validated recipe with its built ops in this process."""

    def __init__(
        self,
        recipe: Recipe,
        ops: list[Op],
        run_dir: str | Path,
        progress: bool = True,
        model_loader: Callable[[Recipe], dict[str, Any]] | None = None,
    ):
        self.recipe, self.ops = recipe, ops
        self.run_dir = Path(run_dir)
        self.progress = Progress(enabled=progress)
        self.model_loader = model_loader

    # ------------------------------------------------------------------ the run
    def run(self, fresh: bool = False) -> RunResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with RunLock(self.run_dir):
            if fresh and (self.run_dir / "steps").exists():
                shutil.rmtree(self.run_dir / "steps")
            manifest = Manifest(self.run_dir, self.recipe)
            loader = self.model_loader or load_models
            models = loader(self.recipe) if self.recipe.models else {}
            results = [self._read_step()]
            manifest.step_finished(results[-1])
            prev = results[-1]
            try:
                with self.progress:
                    for op in self.ops:
                        op.ctx = self._context(op, models)
                        if isinstance(op, Loop):
                            prev = self._loop(op, prev, models, manifest, results)
                            continue
                        result = self._run_step(op, prev, models)
                        register_trained(op, result, models)
                        manifest.step_finished(result)
                        results.append(result)
                        prev = result
                output = self._write_output(prev)
                rows_out = prev.rows_out
                manifest.finish(output, rows_out, {name: m.usage.as_dict() for name, m in models.items()})
            finally:
                for m in models.values():
                    m.close()
            return RunResult(self.run_dir, output, results, results[0].rows_in, rows_out)

    def _context(self, op: Op, models: dict, iteration: int = 0) -> OpContext:
        # Each loop round samples afresh: round t uses seed + t - 1 (round 1 and plain steps use the seed).
        seed = self.recipe.seed + max(iteration - 1, 0)
        return OpContext(
            seed=seed,
            step=op.ctx.step,
            iteration=iteration,
            models=models,
            base_dir=str(self.recipe.base_dir),
        )

    # ------------------------------------------------------------------ loops
    def _loop(
        self, loop: Loop, prev: StepResult, models: dict, manifest: Manifest, results: list
    ) -> StepResult:
        """Run a loop's body once per iteration, each in its own folder; every inner step is an entry of
        the manifest (with its iteration), and the loop's own entry holds the value curve. Returns the
        last inner step's result: the data the steps after the loop read."""
        p = loop.params
        start = time.perf_counter()
        digest = fp.digest(prev.fingerprint, "loop", p.steps, p.data, fp.code_version(type(loop)))
        folder = self.run_dir / "steps" / f"{loop.ctx.step:02d}-loop-{digest[:12]}"
        curve, stopped, last = [], "iterations", prev
        for it in range(1, p.iterations + 1):
            feed = prev if p.data == "initial" else last
            metrics: dict[str, float] = {}
            for j, op in enumerate(loop.body, start=1):
                op.ctx = self._context(op, models, iteration=it)
                feed = self._run_step(op, feed, models, where=folder / f"iter-{it:02d}", index=j)
                register_trained(op, feed, models)
                manifest.step_finished(feed)
                results.append(feed)
                for key, value in feed.stats.get("metrics", {}).items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        metrics[f"{op.name}.{key}"] = value
            last = feed
            curve.append({"iteration": it, "rows": last.rows_out, **metrics})
            if p.until is not None and p.until.reached(metrics.get(p.until.metric)):
                stopped = "until"
                break
        summary = StepResult(
            loop.ctx.step,
            loop.name,
            loop.kind,
            last.fingerprint,
            str(folder),
            status="computed",
            rows_in=prev.rows_out,
            rows_out=last.rows_out,
            seconds=round(time.perf_counter() - start, 3),
            stats={"curve": curve, "iterations_run": len(curve), "stopped": stopped},
        )
        folder.mkdir(parents=True, exist_ok=True)
        manifest.step_finished(summary)
        results.append(summary)
        return last

    # ------------------------------------------------------------------ step 0: read the inputs
    def _read_fingerprint(self) -> str:
        parts = []
        for spec in self.recipe.inputs:
            path = self.recipe.input_path(spec)
            content = path if path.startswith("hf://") else file_digest(path)
            on_error = spec.on_error or self.recipe.on_error
            parts.append([content, spec.format, spec.name, spec.split, on_error])
        return fp.digest("read", parts, self.recipe.shard_size, fp.code_version())

    def _read_step(self) -> StepResult:
        digest = self._read_fingerprint()
        store = StepStore(self.run_dir / "steps" / f"00-read-{digest[:12]}")
        result = StepResult(0, "read", "reader", digest, str(store.path))
        if store.is_done():
            return self._reused(result, store)
        store.prepare()
        start = time.perf_counter()
        seen: set = set()
        k = 0
        for spec in self.recipe.inputs:
            path = self.recipe.input_path(spec)
            on_error = spec.on_error or self.recipe.on_error
            # Parsing is repeated on resume (ids must stay unique), but finished shards are not rewritten.
            for batch in io.read_canonical(
                path, spec.format, spec.split, on_error, spec.name, self.recipe.shard_size, seen
            ):
                if store.has_shard(k):
                    result.shards_reused += 1
                else:
                    drops = None
                    if batch.dropped:
                        drops = pa.table(
                            {
                                "step": pa.array([0] * len(batch.dropped), pa.int32()),
                                "op": ["read"] * len(batch.dropped),
                                "id": pa.array([d.id for d in batch.dropped], pa.string()),
                                "reason": [d.reason for d in batch.dropped],
                                "detail": [d.detail for d in batch.dropped],
                                "row": [d.row for d in batch.dropped],
                            },
                            schema=DROP_SCHEMA,
                        )
                    store.write_shard(k, batch.table, drops)
                k += 1
        return self._finish(result, store, start, rows_in=None)

    # ------------------------------------------------------------------ steps 1..n
    def _step_fingerprint(self, op: Op, prev: StepResult) -> str:
        models = {
            name: self.recipe.models[name].model_dump()
            for name in op.model_refs().values()
            if name in self.recipe.models
        }
        parts = [
            prev.fingerprint,
            op.name,
            op.params.model_dump(mode="json"),
            models,
            self.recipe.shard_size,
            self.recipe.seed,
            fp.code_version(type(op)),
        ]
        if op.ctx.iteration:  # a loop round: its models (policy = the newest checkpoint) differ by round
            parts.append(op.ctx.iteration)
        return fp.digest(*parts)

    def _run_step(
        self, op: Op, prev: StepResult, models: dict | None = None, where: Path | None = None, index: int = 0
    ) -> StepResult:
        """One step over the previous step's shards, in ``where`` (a loop round's folder) or steps/."""
        digest = self._step_fingerprint(op, prev)
        folder = where if where is not None else self.run_dir / "steps"
        store = StepStore(folder / f"{index or op.ctx.step:02d}-{op.name}-{digest[:12]}")
        result = StepResult(
            op.ctx.step, op.name, op.kind, digest, str(store.path), iteration=op.ctx.iteration
        )
        if store.is_done():
            return self._reused(result, store)
        store.prepare()
        inputs = StepStore(prev.dir).shards()
        start = time.perf_counter()
        before = {n: m.usage.copy() for n, m in (models or {}).items()}
        op.setup()
        if isinstance(op, Generator):  # seed shard k -> output shard k, each with its share of the budget
            op.shares = budget_shares(op.params.budget, [pq.read_metadata(p).num_rows for p in inputs])
        if isinstance(op, Mapper | Scorer | Filter | Generator):
            self._row_wise(op, inputs, store, result)
        elif isinstance(op, Selector):
            self._select(op, inputs, store, result)
        elif isinstance(op, Trainer):
            self._train(op, inputs, store, result)
        elif isinstance(op, Evaluator):
            self._evaluate(op, inputs, store, result)
        else:
            raise FlywheelError(
                f"step {op.ctx.step} ({op.name}): the local executor cannot run kind '{op.kind}'"
            )
        used = {n: models[n] for n in op.model_refs().values() if models and n in models}
        return self._finish(result, store, start, rows_in=prev.rows_out, usage_before=before, models=used)

    def _row_wise(self, op: Op, inputs: list[Path], store: StepStore, result: StepResult) -> None:
        task = self.progress.task(f"{op.ctx.step:02d} {op.name}", total=len(inputs))
        for k, shard in enumerate(inputs):
            if store.has_shard(k):
                result.shards_reused += 1
            else:
                process_shard(op, shard, store, k)
            task.advance()

    def _select(self, op: Selector, inputs: list[Path], store: StepStore, result: StepResult) -> None:
        counts = [pq.read_metadata(p).num_rows for p in inputs]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        sel = self._selection(op, inputs, store, int(offsets[-1]))
        result.stats.update(sel.stats)
        indices, dropped = sel.indices, sel.dropped
        task = self.progress.task(f"{op.ctx.step:02d} {op.name}", total=len(inputs))
        step = op.ctx.step
        if np.all(np.diff(indices) > 0):  # a pure subset in input order: stream shard by shard
            for k, shard in enumerate(inputs):
                lo, hi = offsets[k], offsets[k + 1]
                if store.has_shard(k):
                    result.shards_reused += 1
                    task.advance()
                    continue
                table = pq.read_table(shard)
                kept = (indices >= lo) & (indices < hi)
                gone = (dropped >= lo) & (dropped < hi)
                drops = None
                if gone.any():
                    where = np.flatnonzero(gone)
                    drops = drop_rows(
                        step,
                        op.name,
                        table.take(dropped[gone] - lo).to_pylist(),
                        [sel.reasons[i] for i in where],
                        [sel.details[i] for i in where],
                    )
                out = _with_columns(table.take(indices[kept] - lo), sel.columns.filter(pa.array(kept)))
                store.write_shard(k, out, drops)
                task.advance()
            return
        # The selection reorders rows (sort, shuffled mix): gather once, then cut into new shards.
        full = io.concat([pq.read_table(p) for p in inputs])
        size = self.recipe.shard_size
        for k in range(max(1, -(-len(indices) // size))):
            if store.has_shard(k):
                result.shards_reused += 1
                continue
            drops = None
            if k == 0 and len(dropped):
                drops = drop_rows(step, op.name, full.take(dropped).to_pylist(), sel.reasons, sel.details)
            part = slice(k * size, (k + 1) * size)
            out = _with_columns(full.take(indices[part]), sel.columns.slice(part.start, size))
            store.write_shard(k, out, drops)
        task.advance(len(inputs))

    def _selection(self, op: Selector, inputs: list[Path], store: StepStore, n: int) -> _Saved:
        """What the selector decided, saved beside the shards so a resumed step does not decide again."""
        kept_path, dropped_path = store.path / "_selection.parquet", store.path / "_dropped.parquet"
        stats_path = store.path / "_selection_stats.json"
        if kept_path.exists() and dropped_path.exists() and stats_path.exists():
            kept, d = pq.read_table(kept_path), pq.read_table(dropped_path)
            return _Saved(
                kept.column("index").to_numpy(),
                kept.drop_columns(["index"]),
                d.column("index").to_numpy(),
                d.column("reason").to_pylist(),
                d.column("detail").to_pylist(),
                orjson.loads(stats_path.read_bytes()),
            )
        cols = list(dict.fromkeys([S.ID, *op.view_columns()]))
        view = self._view(op, inputs, cols) if inputs else pa.table({S.ID: []})
        selection = op.select(view)
        indices = np.asarray(selection.indices, dtype=np.int64)
        if len(np.unique(indices)) != len(indices) or (
            len(indices) and (indices.min() < 0 or indices.max() >= n)
        ):
            raise FlywheelError(
                f"step {op.ctx.step} ({op.name}): select() must return distinct row positions in [0, {n})"
            )
        dropped = np.setdiff1d(np.arange(n, dtype=np.int64), indices)
        if isinstance(selection.reason, str):
            reasons = [selection.reason] * len(dropped)
        else:
            reasons = [selection.reason.get(int(i), "not selected") for i in dropped]
        details = [(selection.details or {}).get(int(i)) for i in dropped]
        extra = {}
        for name, values in (selection.columns or {}).items():
            arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
            if len(arr) != n:
                raise FlywheelError(
                    f"step {op.ctx.step} ({op.name}): column '{name}' has {len(arr)} values for {n} rows"
                )
            extra[name] = arr.take(pa.array(indices))
        columns = pa.table(extra) if extra else pa.table({"_": pa.nulls(len(indices))}).drop_columns(["_"])
        write_table(
            dropped_path,
            pa.table(
                {
                    "index": pa.array(dropped, pa.int64()),
                    "reason": pa.array(reasons, pa.string()),
                    "detail": pa.array(details, pa.string()),
                }
            ),
        )
        write_table(kept_path, columns.add_column(0, "index", pa.array(indices, pa.int64())))
        store_stats = dict(selection.stats)
        atomic_write_json(stats_path, store_stats)
        return _Saved(indices, columns, dropped, reasons, details, store_stats)

    def _view(self, op: Selector, inputs: list[Path], cols: list[str]) -> pa.Table:
        """The selector's declared columns of every shard, with its per-shard features (threads: the
        feature kernels release the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(len(inputs), os.cpu_count() or 1)) as pool:
            return io.concat(list(pool.map(lambda p: shard_view(op, p, cols), inputs)))

    def _train(self, op: Trainer, inputs: list[Path], store: StepStore, result: StepResult) -> None:
        """Train once (a finished checkpoint is never trained again), then pass the rows through."""
        stats_path = store.path / "_train.json"
        if stats_path.exists():
            result.shards_reused += 1
            stats = orjson.loads(stats_path.read_bytes())
        else:
            data = io.concat([pq.read_table(p) for p in inputs])
            stats = op.train(data, store.path / "checkpoint")
            atomic_write_json(stats_path, stats)
        result.stats["train"] = stats
        _pass_through(inputs, store)

    def _evaluate(self, op: Evaluator, inputs: list[Path], store: StepStore, result: StepResult) -> None:
        """Measure once, keep the metrics beside the shards, pass the rows through."""
        metrics_path = store.path / "_metrics.json"
        if metrics_path.exists():
            metrics = orjson.loads(metrics_path.read_bytes())
        else:
            metrics = op.evaluate()
            atomic_write_json(metrics_path, metrics)
        result.stats["metrics"] = metrics
        _pass_through(inputs, store)

    # ------------------------------------------------------------------ bookkeeping
    def _finish(
        self,
        result: StepResult,
        store: StepStore,
        start: float,
        rows_in: int | None,
        usage_before: dict | None = None,
        models: dict | None = None,
    ) -> StepResult:
        counts = store.row_counts()
        result.rows_out = sum(counts)
        result.shards = len(counts)
        result.dropped = store.drop_reasons()
        result.rows_in = rows_in if rows_in is not None else result.rows_out + sum(result.dropped.values())
        result.seconds = round(time.perf_counter() - start, 3)
        op_counts = store.op_counts()
        if op_counts:  # e.g. an LLM op's requests, failures and unparsed replies, over every shard
            result.stats["counts"] = op_counts
        result.status = "resumed" if result.shards_reused else "computed"
        if models:  # tokens, time, cost and failures of this step's model calls
            result.stats["models"] = {n: m.usage.minus(usage_before[n]).as_dict() for n, m in models.items()}
        store.mark_done(asdict(result))
        return result

    def _reused(self, result: StepResult, store: StepStore) -> StepResult:
        done = store.done_stats()
        for key in ("rows_in", "rows_out", "dropped", "shards", "seconds", "stats"):
            setattr(result, key, done.get(key, getattr(result, key)))
        result.status = "reused"
        return result

    def _write_output(self, last: StepResult) -> Path | None:
        out = self.recipe.output
        path = Path(out.path) if out.path else Path("output.jsonl")
        if not path.is_absolute():
            path = self.run_dir / path
        with io.Writer(str(path), out.format, keep_columns=out.keep_columns) as writer:
            for shard in StepStore(last.dir).shards():
                writer.write_table(pq.read_table(shard))
        return path


def process_shard(op: Op, shard: Path, store: StepStore, k: int) -> int:
    """A row-wise op over one input shard, in batches of ``op.batch_rows`` (or a generator over one seed
    shard): writes output shard k and its drop log (atomically) and returns the rows written. The unit of
    work of every executor."""
    if isinstance(op, Generator):
        return generate_shard(op, shard, store, k, op.shares[k])
    table = pq.read_table(shard)
    size = op.batch_rows or max(table.num_rows, 1)
    op.stats.clear()
    parts, drops = [], []
    for offset in range(0, max(table.num_rows, 1), size):
        out, dropped = apply_op(op, table.slice(offset, size))
        parts.append(out)
        if dropped is not None:
            drops.append(dropped)
    out_table = io.concat(parts) if len(parts) > 1 else parts[0]
    store.write_shard(k, out_table, pa.concat_tables(drops) if drops else None, dict(op.stats))
    return out_table.num_rows


def budget_shares(budget: GenerationBudget, seed_rows: list[int]) -> list[GenerationBudget]:
    """Each seed shard's part of a generator's budget, in proportion to its seeds (rows split exactly by
    largest remainder), so shards can run in any order or in parallel and the total still holds."""
    total = sum(seed_rows)
    fractions = [n / total if total else 1 / max(len(seed_rows), 1) for n in seed_rows]
    rows = [0] * len(seed_rows)
    if budget.rows is not None and seed_rows:
        exact = [budget.rows * f for f in fractions]
        rows = [int(x) for x in exact]
        for i in sorted(range(len(exact)), key=lambda i: (rows[i] - exact[i], i))[: budget.rows - sum(rows)]:
            rows[i] += 1
    return [budget.share(f, r) for f, r in zip(fractions, rows, strict=True)]


def generate_shard(op: Generator, shard: Path, store: StepStore, k: int, budget: GenerationBudget) -> int:
    """A generator over one seed shard: the seeds (if kept) and the rows made from them become output
    shard k, with lineage and unique ids; generation stops when the shard's share of the budget is spent
    (a model batch already answered is kept, so tokens and cost may pass the share by one batch)."""
    seeds = pq.read_table(shard)
    op.stats.clear()
    models = {n: op.ctx.models[n] for n in op.model_refs().values() if n in op.ctx.models}
    before = {n: m.usage.copy() for n, m in models.items()}
    seen = set(seeds.column(S.ID).to_pylist()) if seeds.num_rows else set()
    made: list[dict] = []

    def spent() -> tuple[int, float]:
        used = [m.usage.minus(before[n]) for n, m in models.items()]
        return sum(u.prompt_tokens + u.completion_tokens for u in used), sum(u.cost for u in used)

    def exhausted() -> str | None:
        if budget.rows is not None and len(made) >= budget.rows:
            return "rows"
        tokens, cost = spent() if budget.tokens is not None or budget.cost is not None else (0, 0.0)
        if budget.tokens is not None and tokens >= budget.tokens:
            return "tokens"
        if budget.cost is not None and cost >= budget.cost:
            return "cost"
        return None

    stop = exhausted()
    if stop is None:
        rows = op.generate(seeds)
        for row in rows:
            made.append(_stamp(op, row, seen, ",".join(sorted(models)) or None))
            stop = exhausted()
            if stop is not None:
                if hasattr(rows, "close"):
                    rows.close()
                break
    if stop is not None:
        op.stats[f"budget_reached_{stop}"] += 1
    op.stats["generated"] += len(made)
    new = io.rows_to_table(made) if made else None
    out = io.concat([seeds if op.params.keep_seeds else seeds.slice(0, 0), new])
    store.write_shard(k, out, None, dict(op.stats))
    return out.num_rows


def _stamp(op: Generator, row: dict, seen: set, model: str | None) -> dict:
    """A generated row with the engine's lineage and an id from its content and parents."""
    parents = [str(p) for p in (row.get(S.PARENTS) or [])]
    row = {k: v for k, v in row.items() if k != S.ID}
    row.update(
        {
            S.ORIGIN: op.name,
            S.PARENTS: parents,
            S.OPS: [op.name],
            S.ITERATION: op.ctx.iteration,
            ORIGIN_MODEL: model,
        }
    )
    base = S.hash_text(S.content_id(row) + S.SIDE_SEP + S.TURN_SEP.join(parents))
    row[S.ID] = S.unique_id(base, seen)
    return row


def shard_view(op: Selector, shard: Path, cols: list[str]) -> pa.Table:
    """One shard's share of a selector's view: its declared columns plus its per-shard features."""
    present = set(pq.read_schema(shard).names)  # content columns for a tokens budget: those the data has
    table = pq.read_table(shard, columns=[c for c in cols if c in present or c not in CONTENT_COLUMNS])
    extra = op.shard_features(table)
    return _with_columns(table, pa.table(extra)) if extra else table


def apply_op(op: Op, batch: pa.Table) -> tuple[pa.Table, pa.Table | None]:
    """A row-wise op on one batch: the rows out, and the drop-log records of the rows it dropped."""
    step = op.ctx.step
    if isinstance(op, Scorer):
        cols = op.score(batch)
        for name, values in cols.items():
            arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
            if len(arr) != batch.num_rows:
                raise FlywheelError(
                    f"step {step} ({op.name}): scorer returned {len(arr)} values for "
                    f"{batch.num_rows} rows in column '{name}'"
                )
            i = batch.schema.get_field_index(name)
            batch = batch.set_column(i, name, arr) if i >= 0 else batch.append_column(name, arr)
        return batch, None
    if isinstance(op, Mapper):
        out = op.map(batch)
        if out.num_rows != batch.num_rows:
            raise FlywheelError(
                f"step {step} ({op.name}): a mapper must return as many rows as it got "
                f"({out.num_rows} != {batch.num_rows}); use a filter to drop rows"
            )
        return _note_changes(op.name, batch, out), None
    decision = op.keep(batch)
    keep = np.asarray(decision.keep, dtype=bool)
    if keep.shape != (batch.num_rows,):
        raise FlywheelError(
            f"step {step} ({op.name}): keep() returned {keep.shape[0]} flags for {batch.num_rows} rows"
        )
    if keep.all():
        return batch, None
    gone = np.flatnonzero(~keep)
    reasons = decision.reason
    reasons = [reasons] * len(gone) if isinstance(reasons, str) else [reasons[i] or op.name for i in gone]
    dropped = drop_rows(step, op.name, batch.take(gone).to_pylist(), reasons)
    return batch.filter(pa.array(keep)), dropped


def _pass_through(inputs: list[Path], store: StepStore) -> None:
    """A trainer's or evaluator's output rows are its input rows."""
    for k, shard in enumerate(inputs):
        if not store.has_shard(k):
            write_table(store.shard_path(k), pq.read_table(shard))


def register_trained(op: Op, result: StepResult, models: dict) -> None:
    """A trainer's checkpoint becomes the named model ``output_model`` for the steps after it. In a loop
    round t it is also ``name@t``, and the model it replaces stays reachable as ``name@0``."""
    if not isinstance(op, Trainer) or not op.produced_model():
        return
    name = op.produced_model()
    model = trained_model(op, result, models)
    if result.iteration:
        if name in models and f"{name}@0" not in models:
            models[f"{name}@0"] = models[name]
        models[f"{name}@{result.iteration}"] = model
    models[name] = model


def trained_model(op: Trainer, result: StepResult, models: dict):
    """The checkpoint a trainer step saved, as a named model for the steps after it."""
    from dataflywheel.models.client import Model
    from dataflywheel.recipe.models import ModelSpec

    base = models.get(op.params.model)
    device = base.spec.device if base is not None else "auto"
    spec = ModelSpec(backend="hf", model=str(Path(result.dir) / "checkpoint"), device=device)
    cache = base.cache if base is not None else None
    return Model(op.produced_model(), spec, cache)


@dataclass
class _Saved:
    indices: np.ndarray  # kept positions, in output order
    columns: pa.Table  # selector-written columns for the kept rows, aligned with indices
    dropped: np.ndarray  # dropped positions, sorted
    reasons: list[str]
    details: list[str | None]
    stats: dict


def _with_columns(table: pa.Table, extra: pa.Table) -> pa.Table:
    for name in extra.column_names:
        i = table.schema.get_field_index(name)
        col = extra.column(name)
        table = table.set_column(i, name, col) if i >= 0 else table.append_column(name, col)
    return table


def _note_changes(op_name: str, before: pa.Table, after: pa.Table) -> pa.Table:
    """Append the op to ``ops`` on every row whose content a mapper changed (DESIGN.md lineage)."""
    changed = np.zeros(after.num_rows, dtype=bool)
    for name in after.column_names:
        if name in S.PROTECTED_COLUMNS or name not in before.column_names:
            continue
        a, b = before.column(name), after.column(name)
        if a.type != b.type:
            changed[:] = True
            break
        if not a.equals(b):
            eq = (
                pc.fill_null(pc.equal(a, b), False)
                if pa.types.is_primitive(a.type) or pa.types.is_string(a.type)
                else pa.array([x == y for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)])
            )
            changed |= ~np.asarray(eq.to_numpy(zero_copy_only=False), dtype=bool)
    if not changed.any() or S.OPS not in after.column_names:
        return after
    ops = after.column(S.OPS).to_pylist()
    for i in np.flatnonzero(changed):
        ops[i] = [*(ops[i] or []), op_name]
    return after.set_column(after.schema.get_field_index(S.OPS), S.OPS, pa.array(ops, pa.list_(pa.string())))
