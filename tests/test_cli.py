from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataflywheel.cli import app
from tests.conftest import ROOT, alpaca_rows, write_jsonl

runner = CliRunner()
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_shipped_recipe_validates_and_runs(recipe, shipped_runs):
    run_dir, result = shipped_runs[recipe.stem]
    assert result.exit_code == 0, result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    totals = manifest["totals"]
    assert totals["rows_out"] + totals["rows_dropped"] >= totals["rows_read"]
    assert Path(manifest["output"]["path"]).exists()
    assert "rows" in result.output and "step" in result.output


@pytest.mark.slow
def test_demo_recipe_accounts_for_its_bad_rows_and_closes_the_loop(shipped_runs):
    run_dir, result = shipped_runs["demo"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    read = manifest["steps"][0]
    assert read["dropped"] == {"empty response": 1, "malformed JSON": 1}
    assert manifest["totals"]["rows_read"] == 58
    assert manifest["totals"]["rows_out"] + manifest["totals"]["rows_dropped"] == 58
    drops = runner.invoke(app, ["drops", str(run_dir)])
    assert "malformed JSON" in drops.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    base, tuned = (v for k, v in sorted(metrics.items()) if k.endswith("eval_nll"))
    assert tuned["nll"] < base["nll"]  # tuning on the selected rows lowers the held-out loss
    assert "evaluations" in result.output
    # The loop ends with its report: the held-out tokens the evaluations scored are counted as usage.
    page = (run_dir / "report.html").read_text()
    assert 'data-chart="map"' in page and 'data-chart="eval:nll"' in page and 'data-chart="train:' in page
    evals = [s for s in manifest["steps"] if s["op"] == "eval_nll"]
    assert [next(iter(s["stats"]["models"].values()))["prompt_tokens"] for s in evals] == [
        s["stats"]["metrics"]["tokens"] for s in evals
    ]


@pytest.mark.slow
def test_synthesize_recipe_makes_data_with_lineage_and_compares_it_with_the_seeds(shipped_runs):
    from rouge_score import rouge_scorer

    run_dir, _ = shipped_runs["synthesize"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rows = [json.loads(line) for line in open(manifest["output"]["path"])]
    seeds = [json.loads(line)["id"] for line in open(ROOT / "examples" / "seed_tasks.jsonl")]
    assert len(rows) == 16
    by_op = {s["op"]: s for s in manifest["steps"] if s["kind"] == "generator"}
    for r in rows:
        assert r["origin"] in by_op and r["origin_model"] == "base" and r["parents"]
        if r["origin"] == "self_instruct":
            assert set(r["parents"]) <= set(seeds)
    # no two kept Self-Instruct tasks are near-copies (recomputed with rouge_score)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    tasks = [r["instruction"] for r in rows if r["origin"] == "self_instruct"]
    assert all(scorer.score(a, b)["rougeL"].fmeasure <= 0.7 for i, a in enumerate(tasks) for b in tasks[:i])
    # every candidate task the generator saw is accounted for: kept, or dropped for a named reason
    counts = by_op["self_instruct"]["stats"]["counts"]
    assert counts["instructions_kept"] >= len(set(tasks)) and counts["generated"] >= len(tasks)
    page = (run_dir / "report.html").read_text()
    assert "Generated against seed data" in page and "novelty" in page


def test_validate_exits_non_zero_with_problems(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "version: 1\nname: x\ninputs: [{path: nope.jsonl}]\nsteps: [{sampel: {k: 1}}]\n"
    )
    result = runner.invoke(app, ["validate", str(tmp_path / "r.yaml")])
    assert result.exit_code == 2
    assert "did you mean 'sample'" in result.output and "file not found" in result.output


def test_validate_reports_each_generators_budget(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", alpaca_rows(2))
    (tmp_path / "r.yaml").write_text(
        "version: 1\nname: x\ninputs: [{path: p.jsonl}]\n"
        "steps: [{test_paraphrase: {budget: {rows: 100, cost: 2.5}}}, {test_paraphrase: {}}]\n"
    )
    result = runner.invoke(app, ["validate", str(tmp_path / "r.yaml")])
    assert result.exit_code == 0, result.output
    assert "step 1 test_paraphrase: budget rows <= 100, cost <= 2.5" in result.output
    assert "step 2 test_paraphrase: budget unlimited" in result.output


def test_convert_between_formats(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", alpaca_rows(3))
    result = runner.invoke(app, ["convert", str(src), str(tmp_path / "b.jsonl"), "--to", "sharegpt"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert rows[0] == {
        "conversations": [
            {"from": "human", "value": "q question 0?"},
            {"from": "gpt", "value": "answer number 0 "},
        ]
    }
    back = runner.invoke(
        app, ["convert", str(tmp_path / "b.jsonl"), str(tmp_path / "c.json"), "--to", "alpaca"]
    )
    assert back.exit_code == 0
    assert json.loads((tmp_path / "c.json").read_text()) == alpaca_rows(3)


def test_convert_reports_bad_rows(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", alpaca_rows(2), {1: "{oops"})
    result = runner.invoke(app, ["convert", str(src), str(tmp_path / "b.jsonl"), "--to", "messages"])
    assert result.exit_code == 1 and "a.jsonl:2: malformed JSON" in result.output
    result = runner.invoke(
        app, ["convert", str(src), str(tmp_path / "b.jsonl"), "--to", "messages", "--on-error", "skip"]
    )
    assert result.exit_code == 0 and "skipped 1 bad rows" in result.output
    result = runner.invoke(
        app, ["convert", str(src), str(tmp_path / "b.jsonl"), "--to", "preference", "--on-error", "skip"]
    )
    assert result.exit_code == 1 and "needs chosen and rejected" in result.output


def test_inspect_shows_format_stats_histogram_and_samples():
    result = runner.invoke(app, ["inspect", str(ROOT / "examples" / "demo_pool.jsonl")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "format: alpaca" in out and "rows: 56" in out and "bad rows: 2" in out
    assert "response length (characters)" in out and "█" in out
    assert "example_kind" in out and "sample " in out


def test_ops_catalog_lists_and_describes():
    listing = runner.invoke(app, ["ops"])
    assert listing.exit_code == 0 and "filter" in listing.output and "mix" in listing.output
    one = runner.invoke(app, ["ops", "filter"])
    assert one.exit_code == 0 and "keep_missing" in one.output and "required" in one.output
    assert "reads: <column>" in one.output  # a required column's placeholder is shown, not eaten as HTML
    bad = runner.invoke(app, ["ops", "fliter"])
    assert bad.exit_code == 1 and "did you mean 'filter'" in bad.output


def test_version():
    import dataflywheel

    out = runner.invoke(app, ["--version"])
    assert out.exit_code == 0 and out.output.strip() == f"dataflywheel {dataflywheel.__version__}"


def test_an_unset_variable_in_an_input_path_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("FLYWHEEL_TEST_DATA", raising=False)
    (tmp_path / "r.yaml").write_text(
        "version: 1\nname: x\ninputs: [{path: '${FLYWHEEL_TEST_DATA}/p.jsonl'}]\n"
    )
    out = runner.invoke(app, ["validate", str(tmp_path / "r.yaml")])
    assert (
        out.exit_code == 2
        and "$FLYWHEEL_TEST_DATA in '${FLYWHEEL_TEST_DATA}/p.jsonl' is not set" in out.output
    )


def test_drops_shows_what_failed_and_filters_by_op_and_reason(tmp_path):
    from tests.engine.test_local import make_recipe

    path = make_recipe(
        tmp_path,
        "- rename: {mapping: {quality: score_quality}}\n"
        "- filter: {column: score_quality, min: 5}\n"
        "- head: {n: 2}\n",
        n=10,
        extra="on_error: skip",
        bad_lines={0: "{broken"},
    )
    assert (
        runner.invoke(app, ["run", str(path), "--run-dir", str(tmp_path / "run"), "--quiet"]).exit_code == 0
    )
    every = runner.invoke(app, ["drops", str(tmp_path / "run"), "--limit", "50"])
    assert "9 dropped rows" in every.output
    only = runner.invoke(app, ["drops", str(tmp_path / "run"), "--op", "filter", "--limit", "50"])
    assert "5 of 9 dropped rows" in only.output  # quality 0..4 fail `min: 5`
    assert "score_quality = 0.0" in only.output or "score_quality = 0" in only.output  # the value that failed
    assert "malformed JSON" not in only.output
    by_reason = runner.invoke(app, ["drops", str(tmp_path / "run"), "--reason", "malformed"])
    assert "1 of 9 dropped rows" in by_reason.output and "malformed JSON" in by_reason.output


def test_calibrate_skips_bad_rows_when_asked_and_says_how_many(tmp_path):
    rows = [
        {"instruction": f"q{i}", "output": f"a{i}", "score_x": float(i), "label": int(i >= 3)}
        for i in range(6)
    ]
    rows.insert(2, {"instruction": "q", "output": "", "score_x": 9.0, "label": 1})  # an empty response
    write_jsonl(tmp_path / "d.jsonl", rows)
    args = [
        "calibrate",
        str(tmp_path / "d.jsonl"),
        "--score",
        "score_x",
        "--label",
        "label",
        "--positive",
        "1",
    ]
    stopped = runner.invoke(app, args)
    assert stopped.exit_code != 0 and "empty response" in stopped.output
    done = runner.invoke(app, [*args, "--on-error", "skip"])
    assert done.exit_code == 0 and "left out 1 bad row(s): empty response (1)" in done.output
    assert "1.000" in done.output  # the six good rows separate perfectly


def test_the_run_summary_fits_80_columns_one_line_per_step(tmp_path):
    from rich.console import Console

    from dataflywheel.cli import summary_table
    from dataflywheel.engine.results import RunResult, StepResult

    reason = "near-duplicate (minhash jaccard >= 0.8 of a row kept earlier in the same shard)"
    steps = [
        StepResult(0, "read", "reader", "f", "d", rows_in=1_234_567, rows_out=1_200_000,
                   dropped={reason: 34_567}),
        StepResult(1, "impossible_refine", "generator", "f", "d", rows_in=1_200_000, rows_out=9,
                   dropped={"top variation rate": 3, "top alignment gap": 2}, seconds=12345.6,
                   stats={"models": {"m": {"failed": 1234}}}, iteration=12),
        StepResult(2, "sft", "trainer", "f", "d", status="reused", rows_in=9, rows_out=9),
    ]  # fmt: skip
    console = Console(width=80, record=True)
    console.print(summary_table(RunResult(tmp_path / "run", None, steps, 1_234_567, 9)))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    body = [line for line in lines if line.strip()][3:]  # title, header, rule
    assert len(body) == 3  # one line per step: nothing wrapped
    assert "1@12" in body[1] and "impossible_refine" in body[1] and "5: top …" in body[1]
    assert lines[[i for i, line in enumerate(lines) if line.strip()][1]].split()[4] == "dropped"
    assert "1,234" in body[1] and "12345.6" in body[1]
    assert body[0].split()[2:5] == ["1,234,567", "1,200,000", "34,567:…"]  # the reason cut to fit
    assert body[2].split()[-1] == "reused"
