"""Metrics and evaluations: score calibration, held-out loss, judge win rates, task accuracy."""
