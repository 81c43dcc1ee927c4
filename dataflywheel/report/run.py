"""report.html: one self-contained page that shows what a run did to the data and what it bought.

Everything comes from the run directory, so a report can be rebuilt at any time with
`flywheel report RUN_DIR`: ``collect`` reads it, ``render`` draws it, ``compare`` draws a `flywheel
compare` result.
"""

from __future__ import annotations

from pathlib import Path

from dataflywheel.engine.store import atomic_write_bytes
from dataflywheel.report.collect import collect
from dataflywheel.report.compare import build_compare_report, compare_html, efficiency_svg
from dataflywheel.report.render import render

__all__ = ["build_compare_report", "build_report", "collect", "compare_html", "efficiency_svg", "render"]


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
