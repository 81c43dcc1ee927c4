"""The self-contained HTML report of a run (and of a `flywheel compare` experiment)."""

from dataflywheel.report.run import build_report

__all__ = ["build_report"]
