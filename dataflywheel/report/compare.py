"""The data-efficiency experiment's report: quality against training tokens, one colour per candidate."""

from __future__ import annotations

from html import escape
from pathlib import Path

from dataflywheel.engine.store import atomic_write_bytes
from dataflywheel.report import svg
from dataflywheel.report.page import page
from dataflywheel.report.table import table as _table

LOWER_IS_BETTER = {"nll", "perplexity"}


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
