from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dataflywheel.engine.local import LocalExecutor
from dataflywheel.engine.runinfo import drop_log, load_manifest
from dataflywheel.engine.store import StepStore
from dataflywheel.errors import DataError
from dataflywheel.recipe.validate import validate_file
from tests.conftest import ROOT, alpaca_rows, write_jsonl


def make_recipe(
    tmp_path: Path,
    steps: str,
    n: int = 40,
    shard_size: int = 5,
    extra: str = "",
    bad_lines: dict | None = None,
) -> Path:
    rows = [{**r, "quality": i % 10} for i, r in enumerate(alpaca_rows(n))]
    write_jsonl(tmp_path / "pool.jsonl", rows, bad_lines)
    path = tmp_path / "recipe.yaml"
    path.write_text(
        textwrap.dedent(f"""
        version: 1
        name: t
        inputs: [{{path: pool.jsonl}}]
        shard_size: {shard_size}
        {extra}
        steps:
        """)
        + textwrap.indent(textwrap.dedent(steps), "  ")
    )
    return path


def run(path: Path, run_dir: Path, fresh: bool = False):
    recipe, ops, problems = validate_file(path)
    assert not problems, problems
    return LocalExecutor(recipe, ops, run_dir, progress=False).run(fresh=fresh)


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


STEPS = """
- rename: {mapping: {quality: score_quality}}
- filter: {column: score_quality, min: 3}
- test_chars: {}
- sort: {by: score_chars, descending: true}
- head: {n: 12}
"""


def test_every_row_ends_in_the_output_or_the_drop_log(tmp_path):
    path = make_recipe(
        tmp_path,
        STEPS,
        extra="on_error: skip",
        bad_lines={3: "{not json", 9: '{"instruction": "q", "output": ""}'},
    )
    result = run(path, tmp_path / "run")
    out = read_jsonl(result.output_path)
    drops = drop_log(result.run_dir)
    assert result.rows_read == 42
    assert len(out) + drops.num_rows == 42
    assert len(out) == 12
    ids = {r["id"] for r in out} | {i for i in drops.column("id").to_pylist() if i}
    assert len(ids) == 40  # every good row accounted for exactly once (the 2 bad rows have no id)
    reasons = drops.column("reason").to_pylist()
    assert reasons.count("malformed JSON") == 1 and reasons.count("empty response") == 1
    assert reasons.count("score_quality not >= 3") == 12
    manifest = load_manifest(result.run_dir)
    assert manifest["status"] == "finished"
    assert manifest["totals"] == {"rows_read": 42, "rows_dropped": 30, "rows_out": 12}
    assert [s["op"] for s in manifest["steps"]] == ["read", "rename", "filter", "test_chars", "sort", "head"]
    assert manifest["steps"][2]["dropped"] == {"score_quality not >= 3": 12}
    assert "pyarrow" in manifest["versions"]
    # sort + head keep the 12 longest responses, longest first
    chars = [r["score_chars"] for r in out]
    assert chars == sorted(chars, reverse=True)
    # the dropped rows are whole: they can be recovered from the drop log
    dropped_row = orjson.loads(drops.filter(pc.equal(drops.column("op"), "filter")).column("row")[0].as_py())
    assert dropped_row["messages"][0]["role"] == "user" and dropped_row["score_quality"] < 3


def test_rerun_reuses_every_step_and_a_changed_step_recomputes_from_there(tmp_path):
    path = make_recipe(tmp_path, STEPS)
    first = run(path, tmp_path / "run")
    shard = next(Path(first.steps[1].dir).glob("shard-*.parquet"))
    mtime = shard.stat().st_mtime_ns
    second = run(path, tmp_path / "run")
    assert [s.status for s in second.steps] == ["reused"] * 6
    assert shard.stat().st_mtime_ns == mtime
    assert read_jsonl(second.output_path) == read_jsonl(first.output_path)
    path.write_text(path.read_text().replace("n: 12", "n: 5"))
    third = run(path, tmp_path / "run")
    assert [s.status for s in third.steps] == ["reused"] * 5 + ["computed"]
    assert len(read_jsonl(third.output_path)) == 5
    fresh = run(path, tmp_path / "run", fresh=True)
    assert [s.status for s in fresh.steps] == ["computed"] * 6


def test_bad_input_stops_the_run_by_default(tmp_path):
    path = make_recipe(tmp_path, "- head: {n: 1}\n", bad_lines={2: '{"instruction": 3, "output": "a"}'})
    with pytest.raises(DataError, match=r"pool.jsonl:3: field 'instruction': wrong type"):
        run(path, tmp_path / "run")


def test_mapper_lineage_marks_only_changed_rows(tmp_path):
    path = make_recipe(tmp_path, "- test_upper: {only_short: true}\n", n=10)
    out = read_jsonl(run(path, tmp_path / "run").output_path)
    for row in out:
        changed = row["messages"][-1]["content"].isupper()
        assert row["ops"] == (["test_upper"] if changed else [])
    assert any(r["ops"] for r in out)


def test_generator_rows_carry_parents_and_origin(tmp_path):
    path = make_recipe(tmp_path, "- test_paraphrase: {budget: {rows: 3}}\n", n=6, shard_size=4)
    result = run(path, tmp_path / "run")
    out = read_jsonl(result.output_path)
    assert len(out) == 9 and result.steps[-1].rows_in == 6 and result.steps[-1].rows_out == 9
    seeds = {r["id"]: r for r in out if r["origin"] == "pool"}
    new = [r for r in out if r["origin"] == "test_paraphrase"]
    assert len(new) == 3
    for r in new:
        (parent,) = r["parents"]
        assert r["messages"][0]["content"] == "Rephrased: " + seeds[parent]["messages"][0]["content"]
        assert r["ops"] == ["test_paraphrase"] and r["id"] not in seeds and r["iteration"] == 0
    assert len({r["id"] for r in out}) == 9
    # the budget is split over the seed shards (4 and 2 seeds) in proportion: 2 + 1 rows
    assert [
        len([r for r in new if r["parents"][0] in ids]) for ids in (list(seeds)[:4], list(seeds)[4:])
    ] == [
        2,
        1,
    ]
    assert result.steps[-1].stats["counts"] == {"budget_reached_rows": 2, "generated": 3}


@pytest.mark.parametrize(("rows", "shards", "want"), [(10, [4, 4, 2], [4, 4, 2]), (7, [5, 5], [4, 3])])
def test_budget_shares_add_up_to_the_budget(rows, shards, want):
    from dataflywheel.engine.kernels import budget_shares
    from dataflywheel.ops.base import GenerationBudget

    shares = budget_shares(GenerationBudget(rows=rows, tokens=100), shards)
    assert [s.rows for s in shares] == want and sum(s.rows for s in shares) == rows
    assert sum(s.tokens for s in shares) <= 100


def test_a_generator_resumes_at_its_missing_seed_shards_only(tmp_path):
    log = tmp_path / "gen.log"
    path = make_recipe(tmp_path, f"- test_paraphrase: {{copies: 2, log: {log}}}\n", n=10, shard_size=4)
    first = read_jsonl(run(path, tmp_path / "run").output_path)
    assert log.read_text().split() == ["4", "4", "2"] and len(first) == 30
    step = next((tmp_path / "run" / "steps").glob("01-test_paraphrase-*"))
    (step / "_done.json").unlink()
    (step / "shard-00001.parquet").unlink()  # as if killed while generating from the second seed shard
    kept = {p.name: p.stat().st_mtime_ns for p in step.glob("shard-*.parquet")}
    again = run(path, tmp_path / "run")
    assert log.read_text().split() == ["4", "4", "2", "4"]  # only the missing shard was generated again
    assert {p.name: p.stat().st_mtime_ns for p in step.glob("shard-*.parquet") if p.name in kept} == kept
    assert read_jsonl(again.output_path) == first and again.steps[-1].status == "resumed"


def test_a_token_budget_stops_a_model_backed_generator_and_names_its_model(tmp_path):
    from tests.fakes import ScriptedBackend, scripted_model

    path = make_recipe(
        tmp_path,
        "- test_ask_model: {model: m, keep_seeds: false, budget: {tokens: 40}}\n",
        n=8,
        shard_size=8,
        extra="models: {m: {backend: openai, model: x, base_url: 'http://127.0.0.1:1/v1'}}",
    )
    recipe, ops, problems = validate_file(path)
    assert not problems, problems
    backend = ScriptedBackend(default="four words of answer")  # 3 prompt + 4 completion tokens a call
    ex = LocalExecutor(
        recipe, ops, tmp_path / "run", progress=False, model_loader=lambda r: {"m": scripted_model(backend)}
    )
    result = ex.run()
    out = read_jsonl(result.output_path)
    # 7 tokens a row: the share (40 tokens) is spent after the 6th row, which is kept; no seeds kept
    assert len(out) == 6 and len(backend.calls) == 6
    # the seeds that were not kept are in the drop log, so every input row is accounted for
    assert result.steps[-1].dropped == {"a seed, not kept (keep_seeds: false)": 8}
    assert result.rows_out + sum(sum(s.dropped.values()) for s in result.steps) >= result.rows_read
    assert all(r["origin"] == "test_ask_model" and r["origin_model"] == "m" for r in out)
    assert all(r["messages"][-1]["content"] == "four words of answer" for r in out)


def test_mix_across_inputs_uses_input_names(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", alpaca_rows(10, "a"))
    write_jsonl(tmp_path / "b.jsonl", alpaca_rows(10, "b"))
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: mix
        inputs: [{path: a.jsonl, name: chat}, {path: b.jsonl, name: math}]
        steps:
          - mix: {counts: {chat: 2, math: 5}}
    """)
    )
    out = read_jsonl(run(tmp_path / "r.yaml", tmp_path / "run").output_path)
    assert sorted(r["origin"] for r in out) == ["chat"] * 2 + ["math"] * 5


def test_second_run_on_the_same_directory_is_refused(tmp_path):
    import fcntl

    path = make_recipe(tmp_path, "- head: {n: 1}\n")
    (tmp_path / "run").mkdir()
    with open(tmp_path / "run" / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(Exception, match="another flywheel run is using"):
            run(path, tmp_path / "run")


CLI = [sys.executable, "-c", "import tests.conftest; from dataflywheel.cli import app; app()"]


def test_sigkill_mid_step_resumes_without_recomputing_finished_shards(tmp_path):
    log = tmp_path / "calls.log"
    steps = f"""
    - test_upper: {{sleep: 0.4, log: {log}}}
    - sort: {{by: quality, descending: true}}
    """
    path = make_recipe(tmp_path, steps, n=40, shard_size=4)  # 10 shards, ~4 s in the slow step
    reference = run(path.parent / _copy_without_log(path, tmp_path), tmp_path / "reference")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [*CLI, "run", str(path), "--run-dir", str(tmp_path / "run"), "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    step_dir = None
    deadline = time.time() + 60
    while time.time() < deadline:
        dirs = (
            list((tmp_path / "run" / "steps").glob("01-test_upper-*")) if (tmp_path / "run").exists() else []
        )
        if dirs and len(list(dirs[0].glob("shard-*.parquet"))) >= 3:
            step_dir = dirs[0]
            break
        time.sleep(0.05)
    assert step_dir is not None, proc.communicate()[0].decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in step_dir.glob("shard-*.parquet")}
    assert 3 <= len(finished) < 10 and not (step_dir / "_done.json").exists()
    calls_before = len(log.read_text().splitlines())

    done = subprocess.run(
        [*CLI, "run", str(path), "--run-dir", str(tmp_path / "run"), "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name, mtime in finished.items():
        assert (step_dir / name).stat().st_mtime_ns == mtime, f"{name} was recomputed"
    calls_after = len(log.read_text().splitlines())
    assert calls_after - calls_before == 10 - len(finished)
    assert read_jsonl(tmp_path / "run" / "output.jsonl") == read_jsonl(reference.output_path)
    manifest = load_manifest(tmp_path / "run")
    assert manifest["steps"][1]["status"] == "resumed"
    assert manifest["steps"][1]["shards_reused"] == len(finished)
    assert [r["ops"] for r in read_jsonl(tmp_path / "run" / "output.jsonl")] == [["test_upper"]] * 40


def _copy_without_log(path: Path, tmp_path: Path) -> str:
    text = path.read_text()
    ref = tmp_path / "reference.yaml"
    ref.write_text(text.replace(f", log: {tmp_path / 'calls.log'}", "").replace("sleep: 0.4", "sleep: 0.0"))
    return ref.name


def test_shards_are_parquet_and_bounded(tmp_path):
    path = make_recipe(tmp_path, "- filter: {column: quality, min: 0}\n", n=23, shard_size=5)
    result = run(path, tmp_path / "run")
    counts = [pq.read_metadata(p).num_rows for p in sorted(Path(result.steps[1].dir).glob("shard-*"))]
    assert counts == [5, 5, 5, 5, 3]


def test_a_shard_whose_rows_are_all_bad_has_the_datas_schema_and_later_steps_run(tmp_path):
    bad = {0: "{not json", 1: "[1, 2", 2: "also bad"}  # the whole first shard (3 rows a shard)
    path = make_recipe(
        tmp_path,
        "- text_stats: {fields: [response]}\n- filter: {column: quality, min: 2}\n- sort: {by: quality}\n",
        n=7,
        shard_size=3,
        extra="on_error: skip",
        bad_lines=bad,
    )
    result = run(path, tmp_path / "run")
    read = result.steps[0]
    assert read.rows_out == 7 and read.dropped == {"malformed JSON": 3}
    first = pq.read_table(sorted(StepStore(read.dir).shards())[0])
    assert first.num_rows == 0 and {"id", "messages", "quality", "origin"} <= set(first.column_names)
    assert [r["quality"] for r in read_jsonl(result.output_path)] == [2, 3, 4, 5, 6]


def test_an_input_whose_rows_are_all_bad_stops_or_gives_an_empty_canonical_output(tmp_path):
    steps = "- text_stats: {fields: [response]}\n"
    path = make_recipe(tmp_path, steps, n=0, extra="on_error: skip", bad_lines={0: "{x"})
    recipe, ops, problems = validate_file(path)
    assert [p.key for p in problems] == ["inputs.0.path"]  # validation says so before any work
    with pytest.raises(DataError, match="no readable row"):  # the format cannot be detected: a clear stop
        LocalExecutor(recipe, ops, tmp_path / "run", progress=False).run()
    # with the format given, every row is dropped and the output is empty, with the canonical columns
    path.write_text(path.read_text().replace("{path: pool.jsonl}", "{path: pool.jsonl, format: alpaca}"))
    recipe, ops, _ = validate_file(path)
    result = LocalExecutor(recipe, ops, tmp_path / "run2", progress=False).run()
    assert result.rows_out == 0 and result.steps[0].dropped == {"malformed JSON": 1}
    (shard,) = StepStore(result.steps[0].dir).shards()
    assert pq.read_schema(shard).names == ["id", "messages", "origin", "parents", "ops", "iteration"]


class RecordedProgress:
    """Stands in for the rich progress display: records each task's updates."""

    def __init__(self):
        self.log: list[tuple[str, str, object]] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def task(self, description: str, total):
        log = self.log

        class Task:
            def advance(self, n: int = 1) -> None:
                log.append((description, "advance", n))

            def update(self, done, total, info: str = "") -> None:
                log.append((description, "update", (done, total, info)))

        log.append((description, "start", total))
        return Task()


def test_the_read_step_and_selectors_show_progress(tmp_path):
    path = make_recipe(tmp_path, STEPS, extra="on_error: skip", bad_lines={3: "{not json"})
    recipe, ops, problems = validate_file(path)
    assert not problems, problems
    ex = LocalExecutor(recipe, ops, tmp_path / "run", progress=True)
    ex.progress = RecordedProgress()
    ex.run()
    read = [x for d, kind, x in ex.progress.log if d == "00 read" and kind == "update"]
    assert read[-1] == (40, None, "40 rows from pool.jsonl, 1 bad") and len(read) == 9  # one per shard
    sort = [(kind, x) for d, kind, x in ex.progress.log if d == "04 sort"]
    # the selector's task is there while it decides (a long k-center selection is not a silent pause)
    assert sort[:3] == [
        ("start", 9),
        ("update", (0, 9, "selecting among 28 rows")),
        ("update", (0, 9, "kept 28 of 28")),
    ]
    assert sum(x for kind, x in sort if kind == "advance") == 9
