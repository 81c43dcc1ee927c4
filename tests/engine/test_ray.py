"""The Ray executor against the local one: the same outputs, drop logs and resume behaviour.

Runs on a local Ray instance with two CPUs (`local_ray`); every deterministic op and every shipped recipe
is run both ways and compared byte for byte.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dataflywheel.cli import app
from dataflywheel.engine.local import LocalExecutor
from dataflywheel.engine.ray_executor import RayExecutor
from dataflywheel.engine.store import StepStore
from dataflywheel.models.client import Model
from dataflywheel.recipe.validate import validate_file
from tests.conftest import RECIPES, ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Every op that gives the same answer on every run, in one pipeline over the project's example pool
# (duplicates, other languages, refusals, truncations); embed runs on a Ray actor pool, the generator as
# parallel tasks with the budget split by the driver.
DETERMINISTIC = """
- text_stats: {fields: [instruction, response]}
- language_id: {fields: [conversation]}
- refusal: {}
- truncation: {}
- copies_instruction: {}
- test_paraphrase: {budget: {rows: 9}}
- rename: {mapping: {example_kind: kind}}
- filter: {column: score_response_chars, min: 2}
- exact_dedup: {field: conversation}
- minhash_dedup: {field: conversation, threshold: 0.6, ngram: 2}
- embed: {model: embedder, field: conversation, name: minilm}
- semdedup: {column: embedding_minilm, threshold: 0.97, n_clusters: 3}
- cluster_sample: {column: embedding_minilm, n_clusters: 4, k: 30}
- diverse_filter: {column: embedding_minilm, tau: 0.98, order_by: score_response_words}
- kcenter_select: {column: embedding_minilm, k: 24}
- group_select: {by: tag_conversation_lang, score: score_response_words, k: 1}
- sort: {by: score_response_chars, descending: true}
- sample: {k: 16}
- head: {n: 12}
- select_columns: {columns: [messages, score_response_chars, tag_minhash_cluster]}
"""


def recipe(tmp: Path, steps: str, name: str = "both") -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""
        version: 1
        name: {name}
        inputs: [{{path: {ROOT / "examples" / "demo_pool.jsonl"}}}]
        on_error: skip
        shard_size: 7
        models:
          embedder: {{backend: sentence-transformers, model: "embedded:all-minilm-l6-v2", device: cpu}}
        steps:
        """)
        + textwrap.indent(textwrap.dedent(steps), "  ")
    )
    return path


def run(path: Path, run_dir: Path, executor: str, minilm=None):
    rec, ops, problems = validate_file(path)
    assert not problems, problems
    loader = None
    if minilm is not None and executor == "local":  # the session's model: the driver loads nothing

        def loader(r):
            return {n: Model(n, spec, backend=minilm) for n, spec in r.models.items()}

    cls = RayExecutor if executor == "ray" else LocalExecutor
    return cls(rec, ops, run_dir, progress=False, model_loader=loader).run()


def drop_log(run_dir: Path) -> list[tuple]:
    out = []
    for step in sorted((run_dir / "steps").iterdir()):
        t = StepStore(step).read_drops()
        out += sorted(
            zip(
                t.column("step").to_pylist(),
                t.column("id").to_pylist(),
                t.column("reason").to_pylist(),
                strict=True,
            )
        )
    return out


def test_every_deterministic_op_gives_the_same_output_on_ray(tmp_path, local_ray, minilm):
    path = recipe(tmp_path, DETERMINISTIC)
    local = run(path, tmp_path / "local", "local", minilm)
    on_ray = run(path, tmp_path / "ray", "ray")
    assert local.output_path.read_bytes() == on_ray.output_path.read_bytes()
    assert [(s.op, s.rows_in, s.rows_out, s.dropped) for s in local.steps] == [
        (s.op, s.rows_in, s.rows_out, s.dropped) for s in on_ray.steps
    ]
    assert drop_log(tmp_path / "local") == drop_log(tmp_path / "ray")
    # Every step's shards hold the same rows (the embedding floats included).
    for a, b in zip(local.steps, on_ray.steps, strict=True):
        ta = [pq.read_table(p) for p in StepStore(a.dir).shards()]
        tb = [pq.read_table(p) for p in StepStore(b.dir).shards()]
        assert len(ta) == len(tb) and all(x.equals(y) for x, y in zip(ta, tb, strict=True)), a.op
    # The near-duplicate and exact steps really dropped rows, so the comparison means something.
    dropped = {s.op: sum(s.dropped.values()) for s in on_ray.steps}
    assert dropped["exact_dedup"] > 0 and dropped["minhash_dedup"] > 0
    # The actors' model calls are counted in the driver's manifest.
    embed = next(s for s in on_ray.steps if s.op == "embed")
    usage = embed.stats["models"]["embedder"]
    assert usage["requests"] + usage["cached"] == embed.rows_in


def test_a_killed_ray_step_resumes_without_redoing_finished_shards(tmp_path, local_ray):
    path = recipe(tmp_path, "- text_stats: {fields: [response]}\n- refusal: {}\n")
    first = run(path, tmp_path / "run", "ray")
    step = StepStore(first.steps[1].dir)
    shards = step.shards()
    assert len(shards) >= 6
    # What a kill midway leaves: no completion marker, some shards written, some not.
    step.done_path.unlink()
    for p in shards[::2]:
        p.unlink()
    kept = {p: p.stat().st_mtime_ns for p in shards[1::2]}
    second = run(path, tmp_path / "run", "ray")
    assert second.steps[1].status == "resumed" and second.steps[1].shards_reused == len(kept)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished shards were not rewritten
    assert second.steps[2].status == "reused"
    assert second.output_path.read_bytes() == first.output_path.read_bytes()


@pytest.mark.parametrize("shipped", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_shipped_recipe_runs_the_same_on_ray(shipped, shipped_runs, local_ray, tmp_path):
    local_dir, local_result = shipped_runs[shipped.stem]
    assert local_result.exit_code == 0, local_result.output
    result = CliRunner().invoke(
        app, ["run", str(shipped), "--run-dir", str(tmp_path / "ray"), "--executor", "ray", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    local_manifest = json.loads((local_dir / "manifest.json").read_text())
    ray_manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert (
        Path(ray_manifest["output"]["path"]).read_bytes()
        == Path(local_manifest["output"]["path"]).read_bytes()
    )
    assert [(s["op"], s["rows_out"], s["dropped"]) for s in ray_manifest["steps"]] == [
        (s["op"], s["rows_out"], s["dropped"]) for s in local_manifest["steps"]
    ]
    local_metrics = local_dir / "metrics.json"
    if local_metrics.exists():
        a = json.loads(local_metrics.read_text())
        b = json.loads((tmp_path / "ray" / "metrics.json").read_text())
        assert a.keys() == b.keys()
        for k in a:  # every evaluator's numbers: eval_nll's loss, eval_judge's counts and preference
            assert a[k].keys() == b[k].keys(), k
            for name, value in a[k].items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    assert b[k][name] == pytest.approx(value, abs=1e-4, nan_ok=True), (k, name)


def test_a_run_budget_is_refused_on_ray(tmp_path, local_ray):
    (tmp_path / "pool.jsonl").write_text('{"instruction": "q", "output": "a"}\n')
    (tmp_path / "r.yaml").write_text(
        "version: 1\nname: b\ninputs: [{path: pool.jsonl}]\nbudget: {cost: 1.0}\nsteps:\n  - head: {n: 1}\n"
    )
    recipe, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems, problems
    with pytest.raises(Exception, match="a run budget is enforced by the local executor only"):
        RayExecutor(recipe, ops, tmp_path / "run", progress=False).run()
