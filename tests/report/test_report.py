"""The run report: its numbers against the run's own files, and its charts' geometry."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq
from typer.testing import CliRunner

from dataflywheel.cli import app
from dataflywheel.report import svg, write_report
from dataflywheel.report.run import collect
from tests.engine.test_local import make_recipe, read_jsonl, run

STEPS = """
- text_stats: {fields: [response]}
- rename: {mapping: {quality: score_quality}}
- filter: {column: score_quality, min: 3}
- exact_dedup: {field: instruction}
- sort: {by: score_quality, descending: true}
- head: {n: 12}
"""


def test_report_numbers_match_the_run(tmp_path):
    recipe = make_recipe(tmp_path, STEPS, n=40, bad_lines={3: "{not json"}, extra="on_error: skip")
    result = run(recipe, tmp_path / "run")
    write_report(tmp_path / "run")
    page = (tmp_path / "run" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script src" not in page and "<link" not in page

    data = collect(tmp_path / "run")
    # The funnel is the manifest: every step's rows in and out and its drop reasons.
    assert [(s["rows_in"], s["rows_out"]) for s in data["steps"]] == [
        (s.rows_in, s.rows_out) for s in result.steps
    ]
    assert data["steps"][0]["dropped"] == {"malformed JSON": 1}
    assert {e["reason"] for e in data["drop_examples"]} >= {"malformed JSON"}

    # Score histograms, recomputed independently from the step that wrote the column and the output file.
    kept = {r["id"] for r in read_jsonl(result.output_path)}
    assert len(kept) == 12
    by_name = {s["name"]: s for s in data["scores"]}
    quality = by_name["score_quality"]
    step_dir = next(s["abs_dir"] for s in data["steps"] if s["op"] == "rename")
    table = pq.read_table(sorted(step_dir.glob("shard-*.parquet")))
    values = np.asarray(table.column("score_quality").to_pylist(), dtype=float)
    expect, _ = np.histogram(values, np.asarray(quality["edges"]))
    assert quality["pool"] == expect.tolist() and sum(quality["pool"]) == table.num_rows
    ids = table.column("id").to_pylist()
    picked = values[[i in kept for i in ids]]
    assert quality["selected"] == np.histogram(picked, np.asarray(quality["edges"]))[0].tolist()
    assert quality["mean_selected"] == float(picked.mean()) and picked.mean() > values.mean()
    assert "score_response_chars" in by_name

    # Every chart declares how many marks it drew and draws exactly that many.
    for chart in re.findall(r"<svg class=\"chart\".*?</svg>", page, flags=re.S):
        declared = int(re.search(r'data-marks="(\d+)"', chart).group(1))
        assert declared == len(re.findall(r'class="mark', chart)) and declared > 0
    assert data["map"] is None and "No step wrote an embedding column" in page


def test_report_command_rebuilds_and_adds_a_compare_curve(tmp_path):
    recipe = make_recipe(tmp_path, "- head: {n: 5}\n")
    run(recipe, tmp_path / "run")
    assert not (tmp_path / "run" / "report.html").exists()  # the engine never draws: its callers do
    results = [
        {"candidate": "base (untrained)", "rows": 0, "nll": 2.5, "perplexity": 12.2, "win_rate": None},
        {"candidate": "random_10", "rows": 300, "nll": 2.1, "perplexity": 8.2, "win_rate": None},
        {"candidate": "ifd_10", "rows": 300, "nll": 2.0, "perplexity": 7.4, "win_rate": None},
    ]
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "results.json").write_text(json.dumps(results))
    out = CliRunner().invoke(app, ["report", str(tmp_path / "run"), "--compare", str(tmp_path / "cmp")])
    assert out.exit_code == 0, out.output
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Data-efficiency experiment" in page and 'data-chart="efficiency:nll"' in page
    assert "ifd_10" in page
    bad = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert bad.exit_code == 1 and "not a run directory" in bad.output


def test_ticks_and_scales():
    assert svg.nice_ticks(0, 1) == [0, 0.25, 0.5, 0.75, 1.0]
    assert svg.nice_ticks(3, 97) == [25, 50, 75]
    f = svg.Frame(200, 100, 0, 10, 0, 1, left=0, right=0, top=0, bottom=0)
    assert (f.sx(0), f.sx(10), f.sy(0), f.sy(1)) == (0, 200, 100, 0)
    assert svg.fmt(1234.0) == "1,234" and svg.fmt(float("nan")) == "n/a" and svg.fmt(0.123456) == "0.1235"


def test_chart_text_is_escaped():
    pts = [(0.0, 0.0, 0, "<script>alert(1)</script>"), (1.0, 1.0, 1, "a & b")]
    out = svg.scatter(pts, "t")
    assert "<script>" not in out and "&lt;script&gt;" in out and "a &amp; b" in out
