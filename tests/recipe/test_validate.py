from __future__ import annotations

import textwrap

import pytest

from dataflywheel.errors import RecipeError
from dataflywheel.recipe import load_recipe
from dataflywheel.recipe.validate import validate_file
from tests.conftest import alpaca_rows, write_jsonl


def recipe_file(tmp_path, body: str):
    write_jsonl(tmp_path / "pool.jsonl", [{**r, "quality": i} for i, r in enumerate(alpaca_rows(5))])
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def problems_of(path):
    return [str(p) for p in validate_file(path)[2]]


def test_a_good_recipe_validates(tmp_path):
    path = recipe_file(
        tmp_path,
        """
        version: 1
        name: ok
        inputs: [{path: pool.jsonl}]
        steps:
          - rename: {mapping: {quality: score_quality}}
          - filter: {column: score_quality, min: 2}
          - sample: {k: 2}
    """,
    )
    assert problems_of(path) == []
    recipe = load_recipe(path)
    assert [s.op for s in recipe.steps] == ["rename", "filter", "sample"]


def test_every_problem_is_reported_at_once_with_step_and_key(tmp_path):
    path = recipe_file(
        tmp_path,
        """
        version: 1
        name: bad
        inputs: [{path: pool.jsonl}]
        models:
          judge: {backend: hf, model: embedded:smollm2-135m-instruct}
        steps:
          - sampel: {k: 2}
          - filter: {column: score_alpagasus, min: 4.5}
          - sample: {k: 2, fraction: 0.5}
          - head: {n: 2, extra: 1}
          - filter: {column: quality}
        output: {format: yaml}
    """,
    )
    problems = problems_of(path)
    assert "step 1 (sampel): unknown operator 'sampel'; did you mean 'sample'?" in problems[0]
    assert any(
        p.startswith("step 3 (sample)") and "exactly one of k, fraction or tokens" in p for p in problems
    )
    assert any(
        p.startswith("step 4 (head), key 'extra': unknown parameter; valid parameters: n") for p in problems
    )
    assert any(p.startswith("step 5 (filter)") and "at least one of" in p for p in problems)
    assert any("key 'output.format': unknown output format 'yaml'" in p for p in problems)


def test_column_read_before_written(tmp_path):
    path = recipe_file(
        tmp_path,
        """
        version: 1
        name: flow
        inputs: [{path: pool.jsonl}]
        steps:
          - filter: {column: score_alpagasus, min: 4.5}
    """,
    )
    (problem,) = problems_of(path)
    assert problem.startswith(
        "step 1 (filter), key 'column': column 'score_alpagasus' is read, but no earlier step"
    )
    assert "available: messages, quality, id" in problem


def test_columns_flow_through_select_and_rename(tmp_path):
    path = recipe_file(
        tmp_path,
        """
        version: 1
        name: flow
        inputs: [{path: pool.jsonl}]
        steps:
          - select_columns: {columns: [messages]}
          - filter: {column: quality, min: 1}
    """,
    )
    assert "column 'quality' is read" in problems_of(path)[0]


def test_undeclared_model_and_missing_input(tmp_path):
    from dataflywheel.ops import registry

    registry.register("test_needs_model", "tests.recipe.test_validate:NeedsModel")
    path = recipe_file(
        tmp_path,
        """
        version: 1
        name: m
        inputs: [{path: missing.jsonl}]
        steps:
          - test_needs_model: {model: judge}
    """,
    )
    problems = problems_of(path)
    assert any(
        "key 'model': model 'judge' is not declared under `models:` nor trained by an earlier step "
        "(declared: none)" in p
        for p in problems
    )
    assert any("key 'inputs.0.path'" in p and "missing.jsonl: file not found" in p for p in problems)


def test_schema_errors_have_keys(tmp_path):
    path = recipe_file(
        tmp_path,
        """
        version: 2
        name: "bad name!"
        inputs: []
        surprise: 1
    """,
    )
    problems = problems_of(path)
    keys = {p.split("'")[1] for p in problems}
    assert {"version", "name", "inputs", "surprise"} <= keys


def test_step_shape_and_yaml_errors(tmp_path):
    path = recipe_file(
        tmp_path,
        """
        version: 1
        name: s
        inputs: [{path: pool.jsonl}]
        steps:
          - {head: {n: 1}, sample: {k: 1}}
    """,
    )
    assert "step 1: expected `- op_name: {param: value}`" in problems_of(path)[0]
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    assert "not valid YAML" in problems_of(tmp_path / "broken.yaml")[0]
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_yaml_never_executes_code(tmp_path):
    path = recipe_file(
        tmp_path,
        """
        version: 1
        name: !!python/object/apply:os.system ["echo pwned > pwned.txt"]
        inputs: [{path: pool.jsonl}]
    """,
    )
    assert "not valid YAML" in problems_of(path)[0]
    assert not (tmp_path / "pwned.txt").exists()


def test_paths_expand_variables_and_resolve_against_the_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("POOL_DIR", str(tmp_path))
    path = recipe_file(
        tmp_path,
        """
        version: 1
        name: v
        inputs: [{path: "${POOL_DIR}/pool.jsonl"}, {path: "${UNSET_VAR:-.}/pool.jsonl", name: again}]
    """,
    )
    recipe = load_recipe(path)
    assert {recipe.input_path(s) for s in recipe.inputs} == {str(tmp_path / "pool.jsonl")}


from dataflywheel.ops.base import ModelRef, OpParams, Scorer  # noqa: E402


class NeedsModel(Scorer):
    """Test op with a model parameter."""

    class Params(OpParams):
        model: str = ModelRef()


def test_executor_settings_are_validated(tmp_path):
    good = recipe_file(
        tmp_path,
        """
        version: 1
        name: ok
        inputs: [{path: pool.jsonl}]
        executor: ray
        ray: {address: auto, workers: 8, gpus_per_model_actor: 0.5}
        steps: [{sample: {k: 2}}]
    """,
    )
    assert problems_of(good) == []
    assert load_recipe(good).ray.workers == 8
    bad = recipe_file(
        tmp_path,
        """
        version: 1
        name: bad
        inputs: [{path: pool.jsonl}]
        executor: spark
        ray: {workers: 0, nodes: 3}
        steps: [{sample: {k: 2}}]
    """,
    )
    keys = {p.key for p in validate_file(bad)[2]}
    assert {"executor", "ray.workers", "ray.nodes"} <= keys, keys


def test_an_output_never_overwrites_an_input_nor_leaves_the_run_directory_by_a_relative_path(tmp_path):
    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.errors import FlywheelError
    from dataflywheel.recipe.validate import validate_file
    from tests.conftest import alpaca_rows, write_jsonl

    write_jsonl(tmp_path / "pool.jsonl", alpaca_rows(3))
    before = (tmp_path / "pool.jsonl").read_bytes()

    def recipe(output):
        (tmp_path / "r.yaml").write_text(
            "version: 1\nname: o\ninputs: [{path: pool.jsonl}]\nsteps: [head: {n: 1}]\n"
            f"output: {{path: '{output}'}}\n"
        )
        return validate_file(tmp_path / "r.yaml")

    _, _, problems = recipe(tmp_path / "pool.jsonl")
    assert [str(p) for p in problems] == [
        f"key 'output.path': the output {tmp_path / 'pool.jsonl'} would overwrite an input"
    ]
    rec, ops, _ = recipe(tmp_path / "pool.jsonl")
    with pytest.raises(FlywheelError, match="would overwrite the input"):  # the engine refuses it too
        LocalExecutor(rec, ops, tmp_path / "run", progress=False).run()
    assert (tmp_path / "pool.jsonl").read_bytes() == before and not (tmp_path / "run").exists()
    _, _, problems = recipe("../escaped.jsonl")
    assert any("would leave the run directory" in str(p) for p in problems)
    _, _, problems = recipe(tmp_path / "elsewhere" / "out.jsonl")  # absolute, written as such: allowed
    assert problems == []


def test_validate_prints_where_the_output_lands(tmp_path):
    from typer.testing import CliRunner

    from dataflywheel.cli import app
    from tests.conftest import alpaca_rows, write_jsonl

    write_jsonl(tmp_path / "pool.jsonl", alpaca_rows(3))
    (tmp_path / "r.yaml").write_text(
        "version: 1\nname: o\ninputs: [{path: pool.jsonl}]\noutput: {path: sel.jsonl}\n"
    )
    out = CliRunner().invoke(app, ["validate", str(tmp_path / "r.yaml")])
    assert out.exit_code == 0 and "output: runs/o/sel.jsonl (in the run directory" in out.output


def test_validation_and_detection_look_past_a_bad_head_of_the_file(tmp_path):
    from dataflywheel.data import io
    from dataflywheel.recipe.validate import validate_file
    from tests.conftest import alpaca_rows, write_jsonl

    bad = {i: "{broken" for i in range(30)}  # the first 30 lines are bad, the good rows come after
    write_jsonl(tmp_path / "pool.jsonl", alpaca_rows(5), bad)
    assert io.detect_format(str(tmp_path / "pool.jsonl"))[0] == "alpaca"
    (tmp_path / "r.yaml").write_text(
        "version: 1\nname: h\ninputs: [{path: pool.jsonl}]\non_error: skip\n"
        "steps: [filter: {column: quality, min: 1}]\n"
    )
    problems = [str(p) for p in validate_file(tmp_path / "r.yaml")[2]]
    assert (
        len(problems) == 1 and "column 'quality' is read" in problems[0]
    )  # the flow is checked on real rows


def test_a_wrong_top_level_key_does_not_hide_the_steps_problems(tmp_path):
    from dataflywheel.recipe.validate import validate_file
    from tests.conftest import alpaca_rows, write_jsonl

    write_jsonl(tmp_path / "pool.jsonl", alpaca_rows(3))
    (tmp_path / "r.yaml").write_text(
        "version: 1\nname: t\ninputs: [{path: pool.jsonl}]\nshard_size: -5\noutputs: {path: x.jsonl}\n"
        "steps: [{sampel: {k: 1}}, {head: {n: 1, bogus: 2}}]\n"
    )
    problems = [str(p) for p in validate_file(tmp_path / "r.yaml")[2]]
    assert any("shard_size" in p for p in problems) and any("outputs" in p for p in problems)
    assert any("did you mean 'sample'" in p for p in problems)
    assert any(p.startswith("step 2 (head), key 'bogus'") for p in problems), problems
