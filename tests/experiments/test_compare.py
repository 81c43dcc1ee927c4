"""The data-efficiency experiment end to end on the real SmolLM2 (tiny budget)."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
from typer.testing import CliRunner

from dataflywheel.cli import app

pytestmark = pytest.mark.slow


def test_compare_trains_each_candidate_and_evaluates_all(tmp_path):
    rows = [
        {"instruction": f"What is {i} plus {i}?", "output": f"{i} plus {i} is {2 * i}."} for i in range(20)
    ]
    for name, part in (("small", rows[:4]), ("large", rows[:8]), ("heldout", rows[16:20])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    (tmp_path / "compare.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: tiny
        base: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}
        eval: {data: heldout.jsonl}
        train: {max_steps: 2, batch_size: 4, lr: 0.001, lora_r: 8}
        candidates:
          small: small.jsonl
          large: large.jsonl
    """)
    )
    result = CliRunner().invoke(
        app, ["compare", str(tmp_path / "compare.yaml"), "--out", str(tmp_path / "out"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["candidate"] for r in res] == ["base (untrained)", "small", "large"]
    assert [r["rows"] for r in res] == [0, 4, 8]
    from dataflywheel.data import io
    from dataflywheel.lib.tokens import row_tokens

    for r, name in zip(res[1:], ("small", "large"), strict=True):  # training tokens, counted independently
        table = io.rows_to_table(io.read_all(str(tmp_path / f"{name}.jsonl")).rows)
        assert r["tokens"] == int(row_tokens(table).sum()) > 0
    assert all(math.isfinite(r["nll"]) for r in res)
    assert res[2]["nll"] < res[0]["nll"]  # training on the task's own format lowers the held-out loss
    svg = (tmp_path / "out" / "efficiency.svg").read_text()
    assert svg.startswith("<svg") and "large" in svg and "small" in svg
    assert "data efficiency" in result.output
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'data-chart="efficiency:nll"' in page and 'href="candidates/large/report.html"' in page
    assert (tmp_path / "out" / "candidates" / "large" / "report.html").exists()
