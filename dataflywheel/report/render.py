"""The run report's HTML: one section per question a reader asks (what happened, what it cost, what it
bought), from the data ``collect`` read."""

from __future__ import annotations

import math
from html import escape

from dataflywheel.report import svg
from dataflywheel.report.compare import LOWER_IS_BETTER, compare_html
from dataflywheel.report.page import page
from dataflywheel.report.table import num as _num
from dataflywheel.report.table import table as _table

SCALAR_METRICS = ("nll", "perplexity", "accuracy", "win_rate", "mean_grade")


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


def _generated_section(d: dict) -> str:
    g = d.get("generated")
    if not g:
        return ""
    rows = [
        [escape(name), escape(v["step"]), v["generated"], v["calls"], v["tokens"],
         "" if v["tokens_per_row"] is None else f"{v['tokens_per_row']:.0f}", v["cost"], v["seconds"]]
        for name, v in g["generators"].items()
    ]  # fmt: skip
    html = _table(
        ["generator", "step", "rows made", "calls", "tokens", "tokens / row", "cost ($)", "seconds"], rows
    )
    if not g["origins"]:
        return (
            html
            + "<p>Add an <code>embed</code> step after the generators to compare them with the seeds.</p>"
        )
    html += (
        f"<p>On <code>{escape(g['column'])}</code> at <b>{escape(g['step'])}</b>: diversity is the mean "
        "pairwise cosine distance within an origin, novelty the mean cosine distance of a generated row to "
        "its nearest seed row (0: a copy).</p>"
    )
    rows = [
        [escape(o["origin"]), "generated" if o["generated"] else "seed", o["rows"],
         "" if o["kept"] is None else o["kept"],
         "" if o["diversity"] is None else f"{o['diversity']:.3f}",
         "" if o["novelty"] is None else f"{o['novelty']:.3f}"]
        for o in g["origins"]
    ]  # fmt: skip
    return html + _table(["origin", "", "rows", "kept at the end", "diversity", "novelty"], rows)


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
        speed = ""
        if t.get("tokens_per_second"):
            precision = "bf16" if t.get("bf16") else "fp32"
            speed = f", {t['train_tokens']:,} tokens at {t['tokens_per_second']:,.0f}/s in {precision}"
        title = f"{s['label']}: training loss ({n} examples, {t.get('steps')} steps{speed})"
        chart = svg.lines(series, title, "logging step", "loss", f"train:{s['index']}")
        html += f'<figure class="plot">{chart}</figure>'
    html += _loop_curves(d["steps"])
    if d.get("compare"):
        html += "<h3>Data-efficiency experiment</h3>" + compare_html(d["compare"])
    return html or "<p>This run has no training or evaluation step.</p>"


def _lineage_section(d: dict) -> str:
    """Output rows a generator made, each traced back through its parents to the input rows."""
    paths = d.get("lineage") or []
    if not paths:
        return ""
    html = (
        "<p>Output rows a generator made, each with every ancestor down to the input rows it descends from "
        "(depth 0: the row; 1: its parents, ...). <code>flywheel lineage RUN_DIR ROW_ID</code> traces any "
        "row.</p>"
    )
    for path in paths:
        rows = [
            [a["depth"], escape(a["id"]), escape(a["origin"] or "(not in this run)"), a["iteration"],
             escape(a["model"] or ""), escape(a["step"]), escape(a["text"])]
            for a in path
        ]  # fmt: skip
        html += _table(["depth", "id", "origin", "iteration", "model", "made at", "text"], rows)
    return html


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
        # a chart for each evaluator's headline metric (its first: nll, win_rate, agreement, ...) and
        # for the round's tokens; the table above holds every count
        headline = list(dict.fromkeys(k.split(".")[0] for k in keys if "." in k))
        charted = [next(k for k in keys if k.startswith(f"{op}.")) for op in headline]
        if any(p.get("tokens") for p in curve):
            charted.append("tokens")
        for key in charted:
            pts = [(p["iteration"], p.get(key), "") for p in curve]
            chart = svg.lines({key: pts}, f"{key} by iteration", "iteration", key, f"loop:{s['index']}:{key}")
            html += f'<figure class="plot">{chart}</figure>'
    return html


def render(d: dict) -> str:
    sections = [
        ("overview", "Overview", _overview(d)),
        ("funnel", "Pipeline funnel", _funnel(d)),
        ("scores", "Score distributions", _scores_section(d)),
        ("map", "Pool and selection on the embedding map", _map_section(d)),
        ("generated", "Generated against seed data", _generated_section(d)),
        ("lineage", "Lineage of generated rows", _lineage_section(d)),
        ("usage", "Time, tokens and cost per step", _usage_section(d)),
        ("evaluation", "Training and evaluation", _eval_section(d)),
    ]
    sections = [s for s in sections if s[2]]  # a section with nothing to say (no generator) is left out
    return page(f"dataflywheel run: {d['manifest'].get('name', '')}", sections)
