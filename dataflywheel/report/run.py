"""report.html: one self-contained page that shows what a run did to the data and what it bought.

Everything comes from the run directory (manifest.json, recipe.yaml and the step folders), so a report can
be rebuilt at any time with `flywheel report RUN_DIR`. Reading is bounded: score columns are read one at a
time, and the embedding map samples at most a few thousand rows, shard by shard.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from dataflywheel.data import schema as S
from dataflywheel.engine.store import StepStore, atomic_write_bytes
from dataflywheel.report import svg
from dataflywheel.report.page import page

MAX_SCORES = 48  # score columns shown as histograms
MAP_POOL, MAP_SELECTED = 2500, 1500  # points on the embedding map
BINS = 20
SCALAR_METRICS = ("nll", "perplexity", "accuracy", "win_rate", "mean_grade")
LOWER_IS_BETTER = {"nll", "perplexity"}


def build_report(
    run_dir: str | Path, compare: list[dict] | None = None, out: str | Path | None = None
) -> Path:
    """Write the report of the run in ``run_dir`` (with an optional `flywheel compare` result) and
    return its path."""
    run_dir = Path(run_dir)
    data = collect(run_dir)
    if compare:
        data["compare"] = compare
    path = Path(out) if out else run_dir / "report.html"
    atomic_write_bytes(path, render(data).encode("utf-8"))
    return path


# ---------------------------------------------------------------------------------------------- collect
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
        "drop_examples": _drop_examples(steps),
        "evals": _evals(steps),
        "trainings": [s for s in steps if "train" in s.get("stats", {})],
    }


def _final_ids(step: dict) -> set[str]:
    ids: set[str] = set()
    for shard in StepStore(step["abs_dir"]).shards():
        ids.update(pq.read_table(shard, columns=[S.ID]).column(S.ID).to_pylist())
    return ids


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


def _row_text(row: dict, limit: int = 160) -> str:
    msgs = row.get(S.MESSAGES) or row.get(S.PROMPT) or []
    users = [m["content"] for m in msgs if m and m.get("role") == "user" and m.get("content")]
    text = S.norm_text(users[0] if users else (msgs[0]["content"] if msgs else ""))
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
        texts.extend(_row_text(r) for r in part.select(text_cols).to_pylist())
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
                text = _row_text(orjson.loads(rec["row"]))
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


# ---------------------------------------------------------------------------------------------- render
def _num(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_num(x) for x in v) + "]"
    if isinstance(v, float | int) and not isinstance(v, bool):
        return svg.fmt(v)
    return escape(str(v)) if v is not None else "n/a"


def _table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td data-v="{escape(str(c))}">{_num(c)}</td>' if isinstance(c, int | float) else f"<td>{c}</td>"
            for c in r
        )
        + "</tr>"
        for r in rows
    )
    return f'<table class="sortable {cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _overview(d: dict) -> str:
    m = d["manifest"]
    totals = m.get("totals", {})
    cards = [
        ("status", escape(m.get("status", "?"))),
        ("rows read", _num(totals.get("rows_read", m["steps"][0]["rows_in"] if m.get("steps") else 0))),
        ("rows dropped", _num(totals.get("rows_dropped", 0))),
        ("rows out", _num(totals.get("rows_out", m["steps"][-1]["rows_out"] if m.get("steps") else 0))),
        ("steps", _num(len(d["steps"]) - 1)),
        ("wall time", f"{_num(m.get('seconds', sum(s.get('seconds', 0) for s in d['steps'])))} s"),
    ]
    usage = m.get("models", {})
    tokens = sum(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) for u in usage.values())
    cost = sum(u.get("cost", 0.0) for u in usage.values())
    cards += [("model tokens", _num(tokens)), ("cost", f"${cost:,.4f}")]
    html = '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{k}</div><div class="v">{v}</div></div>' for k, v in cards
    )
    html += "</div>"
    out = m.get("output") or {}
    html += (
        f"<p>Started {escape(str(m.get('started')))}, finished {escape(str(m.get('finished')))}. "
        f"Output: <code>{escape(str(out.get('path')))}</code>.</p>"
    )
    versions = ", ".join(f"{escape(k)} {escape(v)}" for k, v in m.get("versions", {}).items())
    html += f"<details><summary>Versions</summary><p>{versions}</p></details>"
    html += f"<details><summary>Recipe</summary><pre>{escape(d['recipe_yaml'])}</pre></details>"
    return html


def _funnel(d: dict) -> str:
    steps = d["steps"]
    html = f'<figure class="plot" id="plot-funnel">{svg.funnel(steps)}</figure>'
    rows = []
    for s in steps:
        reasons = "<br>".join(f"{escape(r)}: {n:,}" for r, n in s["dropped"].items())
        rows.append(
            [escape(s["label"]), escape(s["kind"]), s["rows_in"], s["rows_out"], reasons, escape(s["status"])]
        )
    html += _table(["step", "kind", "rows in", "rows out", "dropped (reason: rows)", "status"], rows)
    if d["drop_examples"]:
        ex = [
            [
                escape(e["step"]),
                escape(e["reason"]),
                escape(e["detail"] or ""),
                f"<code>{escape(e['id'] or '')}</code>",
                escape(e["text"]),
            ]
            for e in d["drop_examples"]
        ]
        html += "<details><summary>Examples of dropped rows (up to 3 per reason)</summary>"
        html += _table(["step", "reason", "detail", "id", "row"], ex) + "</details>"
    return html


def _scores_section(d: dict) -> str:
    if not d["scores"]:
        return "<p>No step wrote a numeric score column.</p>"
    html = (
        "<p>Grey: every row the score was computed on; blue: the rows this run kept. "
        '<input id="score-filter" placeholder="filter scores by name"></p><div class="grid">'
    )
    for sc in d["scores"]:
        sel = f", kept mean {svg.fmt(sc['mean_selected'])}" if sc["mean_selected"] is not None else ""
        caption = f"{sc['step']}: {sc['rows']:,} rows, mean {svg.fmt(sc['mean'])}{sel}"
        if sc["missing"]:
            caption += f", {sc['missing']:,} missing"
        html += (
            f'<figure class="plot hist" data-name="{escape(sc["name"])}">'
            f"{svg.histogram(sc['name'], sc['edges'], sc['pool'], sc['selected'])}"
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    return html + "</div>"


def _map_section(d: dict) -> str:
    mp = d["map"]
    if mp is None:
        return "<p>No step wrote an embedding column (add an <code>embed</code> step to see the map).</p>"
    shown = len(mp["points"])
    ex = " and ".join(f"{100 * e:.0f}%" for e in mp["explained"])
    title = f"{mp['column']}: PCA of the pool at {mp['step']}"
    html = (
        f"<p>{mp['rows']:,} rows were embedded at <b>{escape(mp['step'])}</b>; "
        f"{mp['selected_rows']:,} of them "
        f"were kept (blue). {shown:,} points are drawn; the two components explain {ex} of the variance. "
        'Hover a point to read its instruction. <label><input type="checkbox" id="map-pool" checked> '
        "show the pool</label></p>"
    )
    return html + f'<figure class="plot" id="plot-map">{svg.scatter(mp["points"], title)}</figure>'


def _usage_section(d: dict) -> str:
    rows = []
    peak = max([s.get("seconds", 0) for s in d["steps"]] + [1e-9])
    for s in d["steps"]:
        models = s.get("stats", {}).get("models", {}) or {}
        bar = f'<span class="bar" style="width:{100 * s.get("seconds", 0) / peak:.0f}px"></span>'
        if not models:
            rows.append([escape(s["label"]), s.get("seconds", 0), bar, "", "", "", "", "", ""])
        for name, u in models.items():
            rows.append(
                [
                    escape(s["label"]),
                    s.get("seconds", 0),
                    bar,
                    escape(name),
                    u.get("requests", 0),
                    u.get("cached", 0),
                    u.get("failed", 0),
                    u.get("prompt_tokens", 0) + u.get("completion_tokens", 0),
                    u.get("cost", 0.0),
                ]
            )
    headers = ["step", "seconds", "", "model", "calls", "cached", "failed", "tokens", "cost ($)"]
    return _table(headers, rows)


def _metric_points(evals: list[dict]) -> dict[str, list[tuple[float, float, str]]]:
    out: dict[str, list] = {}
    for e in evals:
        for key in SCALAR_METRICS:
            v = e["metrics"].get(key)
            if isinstance(v, int | float) and math.isfinite(v):
                out.setdefault(key, []).append((e["train_rows"], float(v), e["model"] or e["step"]))
    return out


def _eval_section(d: dict) -> str:
    evals, html = d["evals"], ""
    if evals:
        keys = list(dict.fromkeys(k for e in evals for k in e["metrics"]))
        rows = [
            [escape(e["step"]), escape(e["model"]), e["train_rows"], *[e["metrics"].get(k) for k in keys]]
            for e in evals
        ]
        html += _table(["step", "model", "trained on rows", *keys], rows)
        for key, pts in _metric_points(evals).items():
            better = "lower" if key in LOWER_IS_BETTER else "higher"
            title = f"{key} against training rows ({better} is better)"
            chart = svg.lines({key: sorted(pts)}, title, "training rows", key, f"eval:{key}", connect=False)
            html += f'<figure class="plot">{chart}</figure>'
    for s in d["trainings"]:
        t = s["stats"]["train"]
        series = {"loss": [(i + 1, v, "") for i, v in enumerate(t.get("losses", []))]}
        if t.get("reward_margins"):
            series["reward margin"] = [(i + 1, v, "") for i, v in enumerate(t["reward_margins"])]
        n = t.get("examples", t.get("pairs"))
        title = f"{s['label']}: training loss ({n} examples, {t.get('steps')} steps)"
        chart = svg.lines(series, title, "logging step", "loss", f"train:{s['index']}")
        html += f'<figure class="plot">{chart}</figure>'
    html += _loop_curves(d["steps"])
    if d.get("compare"):
        html += "<h3>Data-efficiency experiment</h3>" + compare_html(d["compare"])
    return html or "<p>This run has no training or evaluation step.</p>"


def _loop_curves(steps: list[dict]) -> str:
    """Each loop's value curve: every metric its evaluators reported, round by round."""
    html = ""
    for s in steps:
        curve = s.get("stats", {}).get("curve") if s.get("kind") == "loop" else None
        if not curve:
            continue
        keys = list(dict.fromkeys(k for point in curve for k in point if k != "iteration"))
        stopped = s["stats"].get("stopped")
        html += (
            f"<h3>Loop (step {s['index']}): {len(curve)} iteration(s), stopped by {escape(str(stopped))}</h3>"
        )
        html += _table(["iteration", *keys], [[p["iteration"], *[p.get(k) for k in keys]] for p in curve])
        for key in keys:
            if key == "rows":
                continue
            pts = [(p["iteration"], p.get(key), "") for p in curve]
            chart = svg.lines({key: pts}, f"{key} by iteration", "iteration", key, f"loop:{s['index']}:{key}")
            html += f'<figure class="plot">{chart}</figure>'
    return html


def efficiency_svg(results: list[dict], key: str, title: str, name: str | None = None) -> str:
    """Quality against data size: one colour per candidate, named in the legend (candidates often share a
    size, so their points would hide each other's labels)."""
    size = "tokens" if all("tokens" in r for r in results) else "rows"  # older results.json: rows
    per = {
        r["candidate"]: [(r[size], r[key], r["candidate"])]
        for r in results
        if isinstance(r.get(key), int | float)
    }
    return svg.lines(
        per, title, f"training {size}", key, name or f"efficiency:{key}", width=760, connect=False
    )


def efficiency_chart(results: list[dict], key: str, title: str) -> str:
    if not any(isinstance(r.get(key), int | float) for r in results):
        return ""
    return f'<figure class="plot">{efficiency_svg(results, key, title)}</figure>'


def compare_html(results: list[dict], links: bool = False) -> str:
    """The data-efficiency table and its curves (NLL, and win rate when a judge ran)."""
    rows = []
    for r in results:
        name = escape(r["candidate"])
        if links and r.get("report"):
            name = f'<a href="{escape(r["report"])}">{name}</a>'
        rows.append(
            [
                name,
                r["rows"],
                r.get("tokens"),
                r.get("nll"),
                r.get("perplexity"),
                r.get("win_rate"),
                r.get("win_rate_ci95"),
                r.get("unparsed_verdicts"),
            ]
        )
    headers = ["candidate", "training rows", "training tokens", "nll", "perplexity", "win rate", "95% CI"]
    html = _table([*headers, "unparsed verdicts"], rows)
    sizes = [r["tokens"] for r in results if r.get("tokens")]
    if len(sizes) > 1 and max(sizes) > 1.1 * min(sizes):
        ratio = max(sizes) / min(sizes)
        html += (
            f"<p>The candidates differ in training tokens (largest / smallest = {ratio:.2f}): compare"
            " them at equal tokens by selecting each with a <code>tokens:</code> budget.</p>"
        )
    for key, better in (("nll", "lower"), ("win_rate", "higher")):
        html += efficiency_chart(results, key, f"{key} against training tokens ({better} is better)")
    return html


def build_compare_report(out_dir: Path, spec_yaml: str, results: list[dict]) -> Path:
    """report.html of a `flywheel compare` folder: the table, the curves, a link to each candidate's run."""
    for r in results:
        report = Path(r["run"]) / "report.html"
        if report.exists():
            r["report"] = str(report.relative_to(out_dir)) if report.is_relative_to(out_dir) else str(report)
    sections = [
        ("results", "Quality against data size", compare_html(results, links=True)),
        ("spec", "Experiment", f"<pre>{escape(spec_yaml)}</pre>"),
    ]
    path = out_dir / "report.html"
    atomic_write_bytes(path, page(f"dataflywheel compare: {out_dir.name}", sections).encode("utf-8"))
    return path


def render(d: dict) -> str:
    sections = [
        ("overview", "Overview", _overview(d)),
        ("funnel", "Pipeline funnel", _funnel(d)),
        ("scores", "Score distributions", _scores_section(d)),
        ("map", "Pool and selection on the embedding map", _map_section(d)),
        ("usage", "Time, tokens and cost per step", _usage_section(d)),
        ("evaluation", "Training and evaluation", _eval_section(d)),
    ]
    return page(f"dataflywheel run: {d['manifest'].get('name', '')}", sections)
