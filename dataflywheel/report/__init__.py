"""The self-contained HTML report of a run (and of a `flywheel compare` experiment)."""

from __future__ import annotations

import sys
from pathlib import Path

from dataflywheel.report.run import build_report

__all__ = ["build_report", "write_report"]


def write_report(run_dir: Path) -> Path | None:
    """report.html beside the manifest; a report that cannot be drawn never fails a finished run."""
    try:
        return build_report(run_dir)
    except Exception as e:  # the run's data and manifest are already complete
        print(f"warning: report.html was not written: {type(e).__name__}: {e}", file=sys.stderr)
        return None
