"""The unit of work of every executor: one shard through one op (apply the op, write the shard and its
drop log, note lineage), one generator over one seed shard, one shard's share of a selector's view.
Both executors import these; nothing here knows how shards are scheduled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.engine.store import StepStore, drop_rows, write_table
from dataflywheel.errors import FlywheelError
from dataflywheel.ops.base import CONTENT_COLUMNS, GenerationBudget, Generator, Mapper, Op, Scorer, Selector

ORIGIN_MODEL = "origin_model"  # the models a generator asked for a row (names from the recipe)


def process_shard(op: Op, shard: Path, store: StepStore, k: int) -> int:
    """A row-wise op over one input shard, in batches of ``op.batch_rows`` (or a generator over one seed
    shard): writes output shard k and its drop log (atomically) and returns the rows written. The unit of
    work of every executor."""
    if isinstance(op, Generator):
        return generate_shard(op, shard, store, k, op.shares[k])
    table = pq.read_table(shard)
    size = op.batch_rows or max(table.num_rows, 1)
    op.stats.clear()
    failed_before = _failed_calls(op)
    parts, drops = [], []
    for offset in range(0, max(table.num_rows, 1), size):
        out, dropped = apply_op(op, table.slice(offset, size))
        parts.append(out)
        if dropped is not None:
            drops.append(dropped)
    if failed := _failed_calls(op) - failed_before:  # recorded on their rows; counted for --retry-failed
        op.stats["failed_calls"] += failed
    out_table = io.concat(parts) if len(parts) > 1 else parts[0]
    store.write_shard(k, out_table, pa.concat_tables(drops) if drops else None, dict(op.stats))
    return out_table.num_rows


def _failed_calls(op: Op) -> int:
    models = op.ctx.models or {}
    return sum(models[n].usage.failed for n in set(op.model_refs().values()) if n in models)


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
    failed_before = _failed_calls(op)
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
        # a model a loop trains is named by its checkpoint (policy@1), so a row says which one made it
        names = ",".join(sorted(op.ctx.checkpoints.get(n, n) for n in models)) or None
        for row in rows:
            made.append(_stamp(op, row, seen, names))
            stop = exhausted()
            if stop is not None:
                if hasattr(rows, "close"):
                    rows.close()
                break
    if stop is not None:
        op.stats[f"budget_reached_{stop}"] += 1
    op.stats["generated"] += len(made)
    if failed := _failed_calls(op) - failed_before:  # as for row-wise ops: --retry-failed finds the shard
        op.stats["failed_calls"] += failed
    new = io.rows_to_table(made) if made else None
    out = io.concat([seeds if op.params.keep_seeds else seeds.slice(0, 0), new])
    for name in op.output_columns():  # a shard that made nothing still has the columns later steps read
        if name not in out.column_names:
            out = out.append_column(name, pa.nulls(out.num_rows))
    drops = None
    if not op.params.keep_seeds and seeds.num_rows:  # the seeds leave the data here: say so, keep them
        reason = "a seed, not kept (keep_seeds: false)"
        drops = drop_rows(op.ctx.step, op.name, seeds.to_pylist(), [reason] * seeds.num_rows)
    store.write_shard(k, out, drops, dict(op.stats))
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


def read_view_columns(shard: Path, cols: list[str]) -> pa.Table:
    """A shard's columns for a selector's view (content columns for a tokens budget: those it has)."""
    present = set(pq.read_schema(shard).names)
    return pq.read_table(shard, columns=[c for c in cols if c in present or c not in CONTENT_COLUMNS])


def shard_view(op: Selector, shard: Path, cols: list[str]) -> pa.Table:
    """One shard's share of a selector's view: its declared columns plus its per-shard features."""
    table = read_view_columns(shard, cols)
    extra = op.shard_features(table)
    return with_columns(table, pa.table(extra)) if extra else table


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
            batch = S.put_column(batch, name, arr)
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
    details = [decision.details[i] for i in gone] if decision.details is not None else None
    dropped = drop_rows(step, op.name, batch.take(gone).to_pylist(), reasons, details)
    return batch.filter(pa.array(keep)), dropped


def pass_through(inputs: list[Path], store: StepStore) -> None:
    """A trainer's or evaluator's output rows are its input rows."""
    for k, shard in enumerate(inputs):
        if not store.has_shard(k):
            write_table(store.shard_path(k), pq.read_table(shard))


def with_columns(table: pa.Table, extra: pa.Table) -> pa.Table:
    for name in extra.column_names:
        table = S.put_column(table, name, extra.column(name))
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
