from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dataflywheel.cli import app
from dataflywheel.errors import FlywheelError
from dataflywheel.evaluate.calibrate import auc, calibrate


def test_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=60).round(1), rng.integers(0, 2, size=60)
    pos, neg = s[y == 1], s[y == 0]
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auc(s, y) == pytest.approx(pairwise)
    assert auc(np.array([1, 2, 3, 4.0]), np.array([0, 0, 1, 1])) == 1.0


def test_calibrate_threshold_and_labels():
    c = calibrate([1, 2, 3, 4, None], ["1", "1", "2", "2", "2"], positive="2", threshold=2.5)
    assert (c.n, c.missing, c.positives, c.auc, c.accuracy) == (4, 1, 2, 1.0, 1.0)
    best = calibrate([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert best.threshold == 0.35 and best.accuracy == 0.75 and not best.chosen
    with pytest.raises(FlywheelError, match="--positive"):
        calibrate([1, 2], ["a", "b"])


def test_calibrate_command(tmp_path):
    rows = [
        {"instruction": f"q{i}", "output": "a", "score_x": i, "preference": 2 if i > 4 else 1}
        for i in range(10)
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = CliRunner().invoke(
        app,
        [
            "calibrate",
            str(tmp_path / "d.jsonl"),
            "--score",
            "score_x",
            "--label",
            "preference",
            "--positive",
            "2",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "1.000" in out.output and "score_x" in out.output
