"""The Loop kind: rounds in their own checkpointed folders, data and models fed forward, a value curve,
early stopping, and recipe validation of the loop's steps."""

from __future__ import annotations

import itertools
import json
import textwrap

import pytest

from dataflywheel.engine.runinfo import drop_log, load_manifest
from dataflywheel.recipe.validate import validate_file
from dataflywheel.report import write_report
from tests.engine.test_local import make_recipe, read_jsonl, run

LOOP = """
- loop:
    iterations: 3
    steps:
      - test_paraphrase: {budget: {rows: 2}}
      - test_countdown: {}
      - head: {n: 5}
"""


def test_each_round_feeds_the_next_and_tags_the_rows_it_made(tmp_path):
    result = run(make_recipe(tmp_path, LOOP, n=4, shard_size=10), tmp_path / "run")
    out = read_jsonl(result.output_path)
    # round 1: 4 seeds + 2 new -> head 5; round 2: 5 + 2 -> 5; round 3: 5 + 2 -> 5
    assert len(out) == 5
    made = [r for r in out if r["origin"] == "test_paraphrase"]
    assert made and all(r["iteration"] in (1, 2, 3) for r in made)
    manifest = load_manifest(tmp_path / "run")
    inner = [s for s in manifest["steps"] if s.get("iteration")]
    gen = [(s["rows_in"], s["rows_out"]) for s in inner if s["op"] == "test_paraphrase"]
    assert gen == [(4, 6), (5, 7), (5, 7)]  # each round reads the one before
    assert [(s["op"], s["iteration"]) for s in inner] == [
        (op, it) for it in (1, 2, 3) for op in ("test_paraphrase", "test_countdown", "head")
    ]
    assert all(f"/iter-{s['iteration']:02d}/" in s["dir"] for s in inner)
    loop = manifest["steps"][-1]
    assert loop["kind"] == "loop" and loop["stats"]["stopped"] == "iterations"
    curve = loop["stats"]["curve"]
    assert [p["test_countdown.value"] for p in curve] == [10.0, 5.0, 10 / 3]
    assert [p["rows"] for p in curve] == [5, 5, 5]
    # every row a round's head dropped is in the drop log, under the loop's step number
    drops = drop_log(tmp_path / "run")
    assert drops.num_rows == 1 + 2 + 2 and set(drops.column("step").to_pylist()) == {1}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [metrics[f"01-test_countdown@{it}"]["round"] for it in (1, 2, 3)] == [1, 2, 3]
    # the report draws the value curve: one point per round and the line through them
    html = write_report(tmp_path / "run").read_text()
    assert 'data-chart="loop:1:test_countdown.value" data-marks="4"' in html


def test_until_stops_the_loop_when_the_metric_passes_its_bound(tmp_path):
    steps = LOOP.replace(
        "iterations: 3", "iterations: 6\n    until: {metric: test_countdown.value, below: 3}"
    )
    result = run(make_recipe(tmp_path, steps, n=4, shard_size=10), tmp_path / "run")
    loop = result.steps[-1]
    assert loop.stats["stopped"] == "until" and loop.stats["iterations_run"] == 4  # 10, 5, 3.33, 2.5


def test_more_iterations_reuse_the_finished_rounds(tmp_path):
    path = make_recipe(tmp_path, LOOP.replace("iterations: 3", "iterations: 2"), n=4, shard_size=10)
    run(path, tmp_path / "run")
    path.write_text(path.read_text().replace("iterations: 2", "iterations: 3"))
    again = run(path, tmp_path / "run")
    status = [(s.op, s.iteration, s.status) for s in again.steps if s.iteration]
    assert [x[2] for x in status if x[1] <= 2] == ["reused"] * 6
    assert [x[2] for x in status if x[1] == 3] == ["computed"] * 3


def test_data_initial_gives_every_round_the_loops_input(tmp_path):
    steps = LOOP.replace("iterations: 3", "iterations: 2\n    data: initial")
    out = read_jsonl(run(make_recipe(tmp_path, steps, n=4, shard_size=10), tmp_path / "run").output_path)
    assert not any(r["messages"][0]["content"].startswith("Rephrased: Rephrased") for r in out)
    assert {r["iteration"] for r in out if r["origin"] == "test_paraphrase"} == {2}


def problems_of(tmp_path, steps, models=""):
    path = make_recipe(tmp_path, steps, n=4, extra=models)
    return [str(p) for p in validate_file(path)[2]]


def test_problems_inside_a_loop_name_the_inner_step(tmp_path):
    got = problems_of(
        tmp_path,
        """
        - loop:
            iterations: 2
            until: {metric: head.n, below: 1}
            steps:
              - head: {n: 5, bogus: 1}
              - loop: {iterations: 1, steps: [head: {n: 1}]}
              - filter: {column: score_missing, min: 1}
        """,
    )
    assert any(p.startswith("step 1.1 (head), key 'bogus': unknown parameter") for p in got), got
    assert any(p.startswith("step 1.2 (loop): a loop inside a loop") for p in got), got
    assert any("until.metric 'head.n' must name an evaluator" in p for p in got), got
    assert any(p.startswith("step 1.3 (filter)") and "score_missing" in p for p in got), got


def test_a_trainer_may_evolve_its_model_inside_a_loop_only(tmp_path):
    models = "models: {policy: {backend: hf, model: 'embedded:smollm2-135m-instruct'}}"
    inside = "- loop: {iterations: 2, steps: [sft: {model: policy, output_model: policy}]}\n"
    assert problems_of(tmp_path, inside, models) == []
    outside = "- sft: {model: policy, output_model: policy}\n"
    assert any("model name 'policy' is already taken" in p for p in problems_of(tmp_path, outside, models))


@pytest.mark.slow
def test_a_real_model_evolves_round_by_round(tmp_path):
    """SmolLM2 answers, is LoRA-tuned on its answers and evaluated, twice: round 2 generates with round 1's
    checkpoint, and every round's checkpoint is a named model."""
    (tmp_path / "heldout.jsonl").write_text(
        json.dumps({"instruction": "What is the capital of France?", "output": "Paris."}) + "\n"
    )
    steps = textwrap.dedent("""
        - loop:
            iterations: 2
            data: initial
            steps:
              - generate: {model: policy, max_tokens: 16}
              - sft: {model: policy, output_model: policy, max_steps: 2, batch_size: 2, lr: 0.001,
                      lora_r: 4, warmup_ratio: 0}
              - eval_nll: {model: policy, data: heldout.jsonl}
        """)
    path = make_recipe(
        tmp_path,
        steps,
        n=4,
        extra="models: {policy: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}}",
    )
    from dataflywheel.engine.local import LocalExecutor

    recipe, ops, problems = validate_file(path)
    assert not problems, problems
    ex = LocalExecutor(recipe, ops, tmp_path / "run", progress=False)
    seen = {}
    original = ex._run_step

    def spy(op, prev, models=None, **kw):
        if op.name == "generate":  # which checkpoint answers in this round
            seen[op.ctx.iteration] = models["policy"].spec.model
        result = original(op, prev, models, **kw)
        if op.name == "eval_nll":
            seen[f"names@{op.ctx.iteration}"] = sorted(n for n in models if n.startswith("policy"))
        return result

    ex._run_step = spy
    result = ex.run()
    assert seen[1] == "embedded:smollm2-135m-instruct"
    assert (
        seen[2].endswith("iter-01/02-sft-" + seen[2].split("iter-01/02-sft-")[1]) and "checkpoint" in seen[2]
    )
    assert seen["names@2"] == ["policy", "policy@0", "policy@1", "policy@2", "policy@previous"]
    curve = result.steps[-1].stats["curve"]
    assert len(curve) == 2 and all(p["eval_nll.nll"] > 0 for p in curve)
    assert curve[0]["eval_nll.nll"] != curve[1]["eval_nll.nll"]  # round 2's policy is another model


def test_previous_names_the_checkpoint_a_round_started_from(tmp_path):
    from dataflywheel.engine.trained import previous_models

    base, one, two = object(), object(), object()
    # round 1 before its trainer ran: policy itself; after: policy@0, the model before the loop
    assert previous_models({"policy": base}, 1)["policy@previous"] is base
    assert previous_models({"policy": one, "policy@0": base, "policy@1": one}, 1)["policy@previous"] is base
    # round 2 after its trainer: round 1's checkpoint; a model no round trains is itself
    got = previous_models({"policy": two, "policy@0": base, "policy@1": one, "policy@2": two, "j": base}, 2)
    assert got == {"policy@previous": one, "j@previous": base}

    models = "models: {policy: {backend: hf, model: 'embedded:smollm2-135m-instruct'}}"
    judge = "eval_judge: {model: policy, against: policy@previous, judge: policy, data: x.jsonl}"
    inside = f"- loop: {{iterations: 2, steps: [sft: {{model: policy, output_model: policy}}, {judge}]}}\n"
    assert problems_of(tmp_path, inside, models) == []
    assert any(
        "'policy@previous' is the checkpoint a loop round started from" in p
        for p in problems_of(tmp_path, f"- {judge}\n", models)
    )
    unknown = inside.replace("against: policy@previous", "against: other@previous")
    assert any("model 'other' is not declared" in p for p in problems_of(tmp_path, unknown, models))


def test_lineage_traces_a_row_through_every_round_to_its_input_row(tmp_path):
    from typer.testing import CliRunner

    from dataflywheel.cli import app
    from dataflywheel.engine.lineage import RowIndex

    newest_first = """
    - loop:
        iterations: 3
        steps:
          - test_paraphrase: {budget: {rows: 1}}
          - sort: {by: iteration, descending: true}
          - head: {n: 2}
    """
    run(make_recipe(tmp_path, newest_first, n=4, shard_size=10), tmp_path / "run")
    index = RowIndex(tmp_path / "run")
    deepest = max(sorted(index.rows), key=lambda i: len(index.trace(i)))
    path = index.trace(deepest)
    text = path[0].text
    hops = text.count("Rephrased: ")
    assert hops == 3  # each round paraphrased the row the round before made
    # one ancestor per paraphrase, each made one round earlier, ending at an input row
    assert [a.depth for a in path] == list(range(hops + 1))
    assert [a.origin for a in path] == ["test_paraphrase"] * hops + [path[-1].origin]
    assert path[-1].step == "00 read" and path[-1].iteration == 0 and not path[-1].parents
    iterations = [a.iteration for a in path[:-1]]
    assert iterations == sorted(iterations, reverse=True) and len(set(iterations)) == hops
    for child, parent in itertools.pairwise(path):
        assert child.parents == [parent.id]
        assert child.text == "Rephrased: " + parent.text
    assert path[0].step.endswith(f"test_paraphrase @{path[0].iteration}")

    got = CliRunner().invoke(app, ["lineage", str(tmp_path / "run"), deepest], env={"COLUMNS": "200"})
    assert got.exit_code == 0 and f"{hops + 1} row(s)" in got.output and path[-1].id in got.output
    got = CliRunner().invoke(app, ["lineage", str(tmp_path / "run"), "nope"])
    assert got.exit_code == 1 and "no row with id 'nope'" in got.output

    # the report traces a few generated output rows the same way
    html = write_report(tmp_path / "run").read_text()
    assert "Lineage of generated rows" in html and path[-1].id in html
