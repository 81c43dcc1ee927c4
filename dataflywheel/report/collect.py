"""What a run's report shows, read from its run directory (manifest.json, recipe.yaml, the step folders).

Reading is bounded: score columns are read one at a time, and the embedding map samples at most a few
thousand rows, shard by shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from dataflywheel.data import schema as S
from dataflywheel.engine.lineage import RowIndex, row_text
from dataflywheel.engine.store import StepStore

MAX_SCORES = 48  # score columns shown as histograms
MAP_POOL, MAP_SELECTED = 2500, 1500  # points on the embedding map
BINS = 20


def collect(run_dir: Path) -> dict[str, Any]:
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    recipe_path = run_dir / "recipe.yaml"
    recipe_yaml = recipe_path.read_text(encoding="utf-8") if recipe_path.exists() else ""
    recipe = yaml.safe_load(recipe_yaml) if recipe_yaml else {}
    steps = manifest.get("steps", [])
    specs = recipe.get("steps") or []
    for s in steps:
        s["abs_dir"] = run_dir / s["dir"]
        spec = specs[s["index"] - 1] if 0 < s["index"] <= len(specs) else {}
        s["params"] = spec.get("params") or {}
        if s.get("iteration"):  # a step inside a loop: its parameters are in the loop's steps
            inner = [next(iter(x.items())) for x in s["params"].get("steps", []) if isinstance(x, dict)]
            s["params"] = next(((p or {}) for name, p in inner if name == s["op"]), {})
        s["label"] = f"{s['index']:02d} {s['op']}" + (f" @{s['iteration']}" if s.get("iteration") else "")
    data_steps = [s for s in steps if StepStore(s["abs_dir"]).shards()]
    final_ids = _final_ids(data_steps[-1]) if data_steps else None
    return {
        "manifest": manifest,
        "recipe_yaml": recipe_yaml,
        "steps": steps,
        "scores": _scores(data_steps, final_ids),
        "map": _embedding_map(data_steps, final_ids),
        "generated": _generated(steps, data_steps, final_ids),
        "drop_examples": _drop_examples(steps),
        "evals": _evals(steps),
        "trainings": [s for s in steps if "train" in s.get("stats", {})],
        "lineage": _lineage(run_dir, data_steps),
    }


def _final_ids(step: dict) -> set[str]:
    ids: set[str] = set()
    for shard in StepStore(step["abs_dir"]).shards():
        ids.update(pq.read_table(shard, columns=[S.ID]).column(S.ID).to_pylist())
    return ids


def _lineage(run_dir: Path, data_steps: list[dict], shown: int = 3) -> list[list[dict]]:
    """The lineage of a few output rows that were generated, the deepest first (most generations)."""
    if not data_steps or not any(s.get("kind") == "generator" for s in data_steps):
        return []
    index = RowIndex(run_dir)
    made = [i for i in _final_ids(data_steps[-1]) if (index.rows.get(i) or {}).get(S.PARENTS)]
    paths = [index.trace(i) for i in sorted(made)[:200]]
    paths.sort(key=lambda p: (-max(a.depth for a in p), p[0].id))
    return [[vars(a) for a in p] for p in paths[:shown]]


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _read_column(step: dict, column: str) -> pa.Table:
    shards = StepStore(step["abs_dir"]).shards()
    return pa.concat_tables([pq.read_table(p, columns=[S.ID, column]) for p in shards])


def _scores(steps: list[dict], final_ids: set[str] | None) -> list[dict]:
    """Each score column's histogram over the rows of the step that wrote it, and over the kept rows."""
    seen: set[str] = set()
    out = []
    for step in steps:
        schema = pq.read_schema(StepStore(step["abs_dir"]).shards()[0])
        for field in schema:
            if field.name in seen or not field.name.startswith("score_") or not _is_number(field.type):
                continue
            seen.add(field.name)
            if len(out) >= MAX_SCORES:
                continue
            table = _read_column(step, field.name)
            values = table.column(field.name).cast(pa.float64()).to_numpy(zero_copy_only=False)
            finite = np.isfinite(values)
            if not finite.any():
                continue
            lo, hi = float(values[finite].min()), float(values[finite].max())
            edges = np.linspace(lo, hi if hi > lo else lo + 1, BINS + 1)
            pool, _ = np.histogram(values[finite], edges)
            chosen = None
            if final_ids is not None:
                mask = pc.is_in(table.column(S.ID), pa.array(list(final_ids), pa.string()))
                picked = values[np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool) & finite]
                chosen = np.histogram(picked, edges)[0].tolist()
            out.append(
                {
                    "name": field.name,
                    "step": step["label"],
                    "edges": [float(e) for e in edges],
                    "pool": pool.tolist(),
                    "selected": chosen,
                    "rows": int(finite.sum()),
                    "missing": int((~finite).sum()),
                    "mean": float(values[finite].mean()),
                    "mean_selected": float(np.mean(picked)) if chosen is not None and len(picked) else None,
                }
            )
    return out


def _embedding_map(steps: list[dict], final_ids: set[str] | None) -> dict | None:
    """PCA of a sample of the first embedding column: the pool it was computed on against the kept rows."""
    for step in steps:
        shards = StepStore(step["abs_dir"]).shards()
        schema = pq.read_schema(shards[0])
        column = next((f.name for f in schema if f.name.startswith("embedding_")), None)
        if column is not None:
            break
    else:
        return None
    ids = pa.concat_tables([pq.read_table(p, columns=[S.ID]) for p in shards]).column(S.ID)
    selected = np.zeros(len(ids), dtype=bool)
    if final_ids is not None:
        selected = np.asarray(
            pc.is_in(ids, pa.array(list(final_ids), pa.string())).to_numpy(zero_copy_only=False), dtype=bool
        )
    rng = np.random.default_rng(0)
    take = []
    for flag, cap in ((False, MAP_POOL), (True, MAP_SELECTED)):
        where = np.flatnonzero(selected == flag)
        take.append(np.sort(rng.choice(where, cap, replace=False)) if len(where) > cap else where)
    picks = np.sort(np.concatenate(take))
    text_cols = [c for c in (S.MESSAGES, S.PROMPT) if c in schema.names]
    vectors, texts, offset = [], [], 0
    for shard in shards:
        table = pq.read_table(shard, columns=[column, *text_cols])
        here = picks[(picks >= offset) & (picks < offset + table.num_rows)] - offset
        offset += table.num_rows
        if not len(here):
            continue
        part = table.take(pa.array(here))
        vectors.append(np.asarray(part.column(column).to_pylist(), dtype=np.float32))
        texts.extend(row_text(r) for r in part.select(text_cols).to_pylist())
    if not vectors:
        return None
    x = np.concatenate(vectors)
    x = x - x.mean(axis=0)
    _, sing, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T if vt.shape[0] >= 2 else np.c_[x @ vt[:1].T, np.zeros(len(x))]
    explained = (sing[:2] ** 2 / max(float((sing**2).sum()), 1e-12)).tolist()
    return {
        "column": column,
        "step": step["label"],
        "rows": len(ids),
        "selected_rows": int(selected.sum()),
        "explained": explained,
        "points": [
            (float(a), float(b), int(selected[i]), t)
            for (a, b), i, t in zip(xy.tolist(), picks.tolist(), texts, strict=True)
        ],
    }


GENERATED_SAMPLE = 2000  # rows per origin for the diversity and novelty figures


def _generated(steps: list[dict], data_steps: list[dict], final_ids: set[str] | None) -> dict | None:
    """Generated rows against the seeds they came from: per origin, how many were made, embedded and
    kept, their diversity (mean pairwise cosine distance) and novelty (mean cosine distance to the nearest
    seed row), on the first embedding column written after the generators; and each generator's cost."""
    gens = [s for s in steps if s.get("kind") == "generator"]
    if not gens:
        return None
    made = {}
    for s in gens:
        counts = s.get("stats", {}).get("counts", {}) or {}
        usage = s.get("stats", {}).get("models", {}) or {}
        n = counts.get("generated", 0)
        cost = sum(u.get("cost", 0.0) for u in usage.values())
        tokens = sum(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) for u in usage.values())
        calls = sum(u.get("requests", 0) for u in usage.values())
        made[s["op"]] = {
            "step": s["label"], "generated": n, "calls": calls, "tokens": tokens, "cost": cost,
            "seconds": s.get("seconds", 0.0), "tokens_per_row": tokens / n if n else None,
        }  # fmt: skip
    last_gen = max(s["index"] for s in gens)
    origins: list[dict] = []
    column = at = None
    for step in data_steps:
        if step["index"] <= last_gen:
            continue
        shards = StepStore(step["abs_dir"]).shards()
        schema = pq.read_schema(shards[0])
        column = next((f.name for f in schema if f.name.startswith("embedding_")), None)
        if column is None or S.ORIGIN not in schema.names:
            column = None
            continue
        table = pa.concat_tables([pq.read_table(p, columns=[S.ID, S.ORIGIN, column]) for p in shards])
        ids = table.column(S.ID).to_pylist()
        origin = table.column(S.ORIGIN).to_pylist()
        x = np.asarray(table.column(column).to_pylist(), dtype=np.float32)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        seed_rows = np.array([o not in made for o in origin])
        rng = np.random.default_rng(0)
        for name in dict.fromkeys(origin):
            where = np.flatnonzero(np.array([o == name for o in origin]))
            sample = (
                np.sort(rng.choice(where, GENERATED_SAMPLE, replace=False))
                if len(where) > GENERATED_SAMPLE
                else where
            )
            v = x[sample]
            diversity = None
            if len(v) > 1:
                sims = v @ v.T
                diversity = float(1 - (sims.sum() - np.trace(sims)) / (len(v) * (len(v) - 1)))
            novelty = None
            if name in made and seed_rows.any():
                novelty = float(np.mean(1 - (v @ x[seed_rows].T).max(axis=1)))
            kept = sum(ids[i] in final_ids for i in where) if final_ids is not None else None
            origins.append(
                {"origin": name, "generated": name in made, "rows": len(where), "kept": kept,
                 "diversity": diversity, "novelty": novelty}
            )  # fmt: skip
        at = step["label"]
        break
    return {"generators": made, "origins": origins, "column": column, "step": at}


def _drop_examples(steps: list[dict], per_reason: int = 3) -> list[dict]:
    out = []
    for s in steps:
        if not s.get("dropped"):
            continue
        drops = StepStore(s["abs_dir"]).read_drops()
        seen: dict[str, int] = {}
        for rec in drops.select(["id", "reason", "detail", "row"]).to_pylist():
            n = seen.get(rec["reason"], 0)
            if n >= per_reason:
                continue
            seen[rec["reason"]] = n + 1
            try:
                text = row_text(orjson.loads(rec["row"]))
            except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
                text = (rec["row"] or "")[:160]
            out.append(
                {
                    "step": s["label"],
                    "reason": rec["reason"],
                    "detail": rec["detail"],
                    "id": rec["id"],
                    "text": text,
                }
            )
    return out


def _evals(steps: list[dict]) -> list[dict]:
    """Evaluator results, each with the number of rows its model was trained on (0 for an untrained one)."""
    trained: dict[str, int] = {}
    out = []
    for s in steps:
        stats = s.get("stats", {})
        if "train" in stats and s["params"].get("output_model"):
            t = stats["train"]
            trained[s["params"]["output_model"]] = int(t.get("examples", t.get("pairs", s["rows_in"])))
        if "metrics" in stats:
            model = s["params"].get("model", "")
            out.append(
                {
                    "step": s["label"],
                    "model": model,
                    "train_rows": trained.get(model, 0),
                    "metrics": stats["metrics"],
                }
            )
    return out
