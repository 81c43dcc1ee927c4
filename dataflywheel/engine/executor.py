"""The executor base: one step loop for every executor (local, Ray).

Row-wise ops (Mapper, Scorer, Filter, Generator) go shard by shard, so memory is bounded by a shard; how
the shards are scheduled is the subclass's business (``run_shards``). A Selector reads only the columns
it declared for all shards (``view``), decides, then the rows are taken shard by shard (or gathered once
when the selection reorders them). Every step's output lives in a folder named by its fingerprint: a
rerun reuses finished steps, and an interrupted step resumes at its first missing shard.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.engine import fingerprint as fp
from dataflywheel.engine.kernels import budget_shares, pass_through, with_columns
from dataflywheel.engine.results import RunLock, RunResult, StepResult
from dataflywheel.engine.trained import checkpoint_name, previous_models, register_trained

__all__ = ["Executor", "RunResult", "StepResult"]
from dataflywheel.engine.manifest import Manifest
from dataflywheel.engine.progress import Progress
from dataflywheel.engine.store import DROP_SCHEMA, StepStore, atomic_write_json, drop_rows, write_table
from dataflywheel.errors import FlywheelError
from dataflywheel.hashing import file_digest
from dataflywheel.models.client import load_models
from dataflywheel.ops.base import (
    Evaluator,
    Generator,
    Loop,
    Op,
    OpContext,
    Selector,
    Trainer,
)
from dataflywheel.recipe.models import Recipe


class BudgetReached(FlywheelError):
    """The recipe's budget is spent: the run stopped cleanly between shards and resumes when rerun with
    a higher limit."""

    def __init__(self, what: str, spent: dict, limit: float):
        self.details = {"budget": what, "limit": limit, "spent": spent}
        if what == "cost":
            shown = f"${spent['cost']:.4f} of ${limit:.4f}"
        else:
            shown = f"{spent['tokens']:,} of {limit:,} tokens"
        super().__init__(
            f"budget reached: {shown} spent on model calls. Finished shards are kept; raise `budget.{what}` "
            "in the recipe and run again to go on."
        )


class Executor:
    """Runs a validated recipe step by step: the step loop, fingerprints, checkpoints, loops, selections,
    training and evaluation. Subclasses say how the shards of a row-wise step are scheduled
    (``run_shards``) and how a selector's view is gathered (``view``)."""

    def __init__(
        self,
        recipe: Recipe,
        ops: list[Op],
        run_dir: str | Path,
        progress: bool = True,
        model_loader: Callable[[Recipe], dict[str, Any]] | None = None,
        retry_failed: bool = False,
    ):
        self.recipe, self.ops = recipe, ops
        self.run_dir = Path(run_dir)
        self.progress = Progress(enabled=progress)
        self.model_loader = model_loader
        # retry_failed: a finished step's shards with failed model calls are computed again, and every step
        # after it too (its input changed); off by default, since a permanent failure would redo them
        # on every rerun.
        self.retry_failed = retry_failed
        self._input_changed = False
        self._models: dict = {}
        self._spent_before = {"cost": 0.0, "tokens": 0}

    # ------------------------------------------------------------------ the run
    # Whether this executor sees every model call as it happens (a run budget needs that).
    enforces_budget: bool = True

    def run(self, fresh: bool = False) -> RunResult:
        budget = self.recipe.budget
        if not self.enforces_budget and (budget.cost is not None or budget.tokens is not None):
            raise FlywheelError(
                f"a run budget is enforced by the local executor only; {type(self).__name__} runs model "
                "calls in workers it does not meter: remove `budget` or run with --executor local"
            )
        out = self.recipe.output_path(self.run_dir).resolve()
        for spec in self.recipe.inputs:  # checked before any work: an output never overwrites an input
            if Path(self.recipe.input_path(spec)).resolve() == out:
                raise FlywheelError(
                    f"the output {out} would overwrite the input {spec.path}; choose another path"
                )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with RunLock(self.run_dir):
            if fresh and (self.run_dir / "steps").exists():
                shutil.rmtree(self.run_dir / "steps")
            manifest = Manifest(self.run_dir, self.recipe)
            loader = self.model_loader or load_models
            models = loader(self.recipe) if self.recipe.models else {}
            self._models = models
            self._spent_before = self._load_spent()
            results = [self._read_step()]
            manifest.step_finished(results[-1])
            prev = results[-1]
            try:
                with self.progress:
                    for op in self.ops:
                        self.check_budget()
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
            except BudgetReached as stop:
                manifest.stopped(stop.details, {name: m.usage.as_dict() for name, m in models.items()})
                raise
            finally:
                self._save_spent()
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
            models={**models, **previous_models(models, iteration)} if iteration else models,
            checkpoints={n: checkpoint_name(n, models) for n in models if "@" not in n} if iteration else {},
            base_dir=str(self.recipe.base_dir),
        )

    # ------------------------------------------------------------------ the budget
    def spent(self) -> dict[str, float]:
        """Model spending of this run directory: earlier invocations (spent.json) and this one."""
        cost = self._spent_before["cost"] + sum(m.usage.cost for m in self._models.values())
        tokens = self._spent_before["tokens"] + sum(
            m.usage.prompt_tokens + m.usage.completion_tokens for m in self._models.values()
        )
        return {"cost": round(cost, 9), "tokens": int(tokens)}

    def check_budget(self) -> None:
        """Stop (between steps and shards) once the recipe's budget is spent; saves the spending first."""
        budget = self.recipe.budget
        if budget.cost is None and budget.tokens is None:
            return
        self._save_spent()
        spent = self.spent()
        for what in ("cost", "tokens"):
            limit = getattr(budget, what)
            if limit is not None and spent[what] >= limit:
                raise BudgetReached(what, spent, limit)

    def _load_spent(self) -> dict[str, float]:
        path = self.run_dir / "spent.json"
        if not path.exists():
            return {"cost": 0.0, "tokens": 0}
        data = orjson.loads(path.read_bytes())
        return {"cost": float(data.get("cost", 0.0)), "tokens": int(data.get("tokens", 0))}

    def _save_spent(self) -> None:
        if self._models or (self.run_dir / "spent.json").exists():
            atomic_write_json(self.run_dir / "spent.json", self.spent())

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
            spent = {"tokens": 0, "cost": 0.0, "seconds": 0.0}  # what the round cost (kept across resumes)
            for j, op in enumerate(loop.body, start=1):
                self.check_budget()
                op.ctx = self._context(op, models, iteration=it)
                feed = self._run_step(op, feed, op.ctx.models, where=folder / f"iter-{it:02d}", index=j)
                register_trained(op, feed, models)
                manifest.step_finished(feed)
                results.append(feed)
                spent["seconds"] += feed.seconds or 0.0
                for usage in feed.stats.get("models", {}).values():
                    spent["tokens"] += usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
                    spent["cost"] += usage.get("cost", 0.0)
                for key, value in feed.stats.get("metrics", {}).items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        metrics[f"{op.name}.{key}"] = value
            last = feed
            curve.append(
                {
                    "iteration": it,
                    "rows": last.rows_out,
                    "tokens": spent["tokens"],
                    "cost": round(spent["cost"], 6),
                    "seconds": round(spent["seconds"], 3),
                    **metrics,
                }
            )
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
            part = [content, spec.format, spec.name, spec.split, on_error, spec.fields or None]
            parts.append(part + [spec.limit] if spec.limit else part)
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
        k = read = bad = 0
        task = self.progress.task("00 read", total=None)
        for spec in self.recipe.inputs:
            path = self.recipe.input_path(spec)
            on_error = spec.on_error or self.recipe.on_error
            left = spec.limit
            # Parsing is repeated on resume (ids must stay unique), but finished shards are not rewritten.
            for batch in io.read_canonical(
                path, spec.format, spec.split, on_error, spec.name, self.recipe.shard_size, seen, spec.fields
            ):
                if left is not None:  # `limit`: the first rows only
                    if left <= 0:
                        break
                    batch.table = batch.table.slice(0, left)
                    left -= batch.table.num_rows
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
                read, bad = read + batch.table.num_rows, bad + len(batch.dropped)
                task.update(
                    read, None, f"{read:,} rows from {Path(path).name}" + (f", {bad:,} bad" if bad else "")
                )
        give_empty_shards_the_schema(store)
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
        if self._input_changed and store.path.exists():
            shutil.rmtree(store.path)  # computed from rows an earlier step has since changed
        if store.is_done():
            failed = store.failed_shards() if self.retry_failed else []
            if not failed:
                return self._reused(result, store)
            for k in failed:
                store.remove_shard(k)
            store.done_path.unlink()
            self._input_changed = True
        store.prepare()
        inputs = StepStore(prev.dir).shards()
        start = time.perf_counter()
        before = {n: m.usage.copy() for n, m in (models or {}).items()}
        op.setup()
        if isinstance(op, Generator):  # seed shard k -> output shard k, each with its share of the budget
            op.shares = budget_shares(op.params.budget, [pq.read_metadata(p).num_rows for p in inputs])
        handler = self.handlers().get(op.kind)
        if handler is None:
            raise FlywheelError(f"step {op.ctx.step} ({op.name}): no executor handles kind '{op.kind}'")
        handler(op, inputs, store, result)
        used: dict = {}  # one entry per model object (policy@previous may be policy itself)
        for n in op.model_refs().values():
            if models and n in models and all(m is not models[n] for m in used.values()):
                used[n] = models[n]
        return self._finish(result, store, start, rows_in=prev.rows_out, usage_before=before, models=used)

    def handlers(self) -> dict[str, Callable]:
        """Op kind -> how a step of that kind runs (loops are run by ``run`` itself)."""
        return {
            "mapper": self._row_wise,
            "scorer": self._row_wise,
            "filter": self._row_wise,
            "generator": self._row_wise,
            "selector": self._select,
            "trainer": self._train,
            "evaluator": self._evaluate,
        }

    def _row_wise(self, op: Op, inputs: list[Path], store: StepStore, result: StepResult) -> None:
        """Every input shard not yet written goes through ``process_shard``, scheduled by the executor."""
        pending = [(k, p) for k, p in enumerate(inputs) if not store.has_shard(k)]
        result.shards_reused += len(inputs) - len(pending)
        task = self.progress.task(f"{op.ctx.step:02d} {op.name}", total=len(inputs))
        task.advance(len(inputs) - len(pending))
        if pending:
            self.run_shards(op, pending, store, task)

    def run_shards(self, op: Op, pending: list[tuple[int, Path]], store: StepStore, task) -> None:
        """Run ``process_shard`` on each (k, input shard) pending, advancing ``task`` per shard."""
        raise NotImplementedError

    def view(self, op: Selector, inputs: list[Path], cols: list[str]) -> pa.Table:
        """A selector's declared columns of every shard, with its per-shard features, in row order."""
        raise NotImplementedError

    def _select(self, op: Selector, inputs: list[Path], store: StepStore, result: StepResult) -> None:
        counts = [pq.read_metadata(p).num_rows for p in inputs]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n = int(offsets[-1])
        task = self.progress.task(f"{op.ctx.step:02d} {op.name}", total=len(inputs))
        task.update(0, len(inputs), f"selecting among {n:,} rows")
        sel = self._selection(op, inputs, store, n)
        result.stats.update(sel.stats)
        indices, dropped = sel.indices, sel.dropped
        task.update(0, len(inputs), f"kept {len(indices):,} of {n:,}")
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
                    gone_rows = with_columns(table.take(dropped[gone] - lo), sel.dropped_columns.filter(gone))
                    drops = drop_rows(
                        step,
                        op.name,
                        gone_rows.to_pylist(),
                        [sel.reasons[i] for i in where],
                        [sel.details[i] for i in where],
                    )
                out = with_columns(table.take(indices[kept] - lo), sel.columns.filter(pa.array(kept)))
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
                gone_rows = with_columns(full.take(dropped), sel.dropped_columns)
                drops = drop_rows(step, op.name, gone_rows.to_pylist(), sel.reasons, sel.details)
            part = slice(k * size, (k + 1) * size)
            out = with_columns(full.take(indices[part]), sel.columns.slice(part.start, size))
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
                d.drop_columns(["index", "reason", "detail"]),
            )
        cols = list(dict.fromkeys([S.ID, *op.view_columns()]))
        view = self.view(op, inputs, cols) if inputs else pa.table({S.ID: []})
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
        extra, gone = {}, {}
        for name, values in (selection.columns or {}).items():
            arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
            if len(arr) != n:
                raise FlywheelError(
                    f"step {op.ctx.step} ({op.name}): column '{name}' has {len(arr)} values for {n} rows"
                )
            if name in ("index", "reason", "detail"):
                raise FlywheelError(
                    f"step {op.ctx.step} ({op.name}): '{name}' is not a column a selector may write"
                )
            extra[name] = arr.take(pa.array(indices))
            gone[name] = arr.take(pa.array(dropped))  # the drop log shows what the selector saw
        columns = pa.table(extra) if extra else _no_columns(len(indices))
        write_table(
            dropped_path,
            pa.table(
                {
                    "index": pa.array(dropped, pa.int64()),
                    "reason": pa.array(reasons, pa.string()),
                    "detail": pa.array(details, pa.string()),
                    **gone,
                }
            ),
        )
        write_table(kept_path, columns.add_column(0, "index", pa.array(indices, pa.int64())))
        store_stats = dict(selection.stats)
        atomic_write_json(stats_path, store_stats)
        return _Saved(
            indices,
            columns,
            dropped,
            reasons,
            details,
            store_stats,
            pa.table(gone) if gone else _no_columns(len(dropped)),
        )

    def _train(self, op: Trainer, inputs: list[Path], store: StepStore, result: StepResult) -> None:
        """Train once (a finished checkpoint is never trained again), then pass the rows through."""
        stats_path = store.path / "_train.json"
        if stats_path.exists():
            result.shards_reused += 1
            stats = orjson.loads(stats_path.read_bytes())
        else:
            data = io.concat([pq.read_table(p) for p in inputs])
            op.progress = self.progress.task(f"{op.ctx.step:02d} {op.name}", total=None).update
            stats = op.train(data, store.path / "checkpoint")
            atomic_write_json(stats_path, stats)
        result.stats["train"] = stats
        pass_through(inputs, store)

    def _evaluate(self, op: Evaluator, inputs: list[Path], store: StepStore, result: StepResult) -> None:
        """Measure once, keep the metrics beside the shards, pass the rows through."""
        metrics_path = store.path / "_metrics.json"
        if metrics_path.exists():
            metrics = orjson.loads(metrics_path.read_bytes())
        else:
            op.inputs = inputs  # an evaluator without a data file measures the rows that reach it
            metrics = op.evaluate()
            atomic_write_json(metrics_path, metrics)
        result.stats["metrics"] = metrics
        pass_through(inputs, store)

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
        path = self.recipe.output_path(self.run_dir)
        with io.Writer(str(path), out.format, keep_columns=out.keep_columns) as writer:
            for shard in StepStore(last.dir).shards():
                writer.write_table(pq.read_table(shard))
        return path


def give_empty_shards_the_schema(store: StepStore) -> None:
    """A shard whose rows were all bad has no columns; later steps need the data's columns there too, so
    it is rewritten as an empty table of the schema the other shards share (the canonical one if none)."""
    shards = store.shards()
    schemas = [pq.read_schema(p) for p in shards]
    empty = [
        p
        for p, sc, n in zip(shards, schemas, store.row_counts(), strict=True)
        if n == 0 and S.ID not in sc.names
    ]
    if not empty:
        return
    full = [sc for sc in schemas if S.ID in sc.names]
    schema = pa.unify_schemas(full, promote_options="permissive") if full else S.empty_schema()
    for p in empty:
        write_table(p, schema.empty_table())


def _no_columns(rows: int) -> pa.Table:
    """A table of ``rows`` rows and no columns (what a selector that writes none annotates)."""
    return pa.table({"_": pa.nulls(rows)}).drop_columns(["_"])


@dataclass
class _Saved:
    indices: np.ndarray  # kept positions, in output order
    columns: pa.Table  # selector-written columns for the kept rows, aligned with indices
    dropped: np.ndarray  # dropped positions, sorted
    reasons: list[str]
    details: list[str | None]
    stats: dict
    dropped_columns: pa.Table  # the selector-written columns of the dropped rows, aligned with dropped
