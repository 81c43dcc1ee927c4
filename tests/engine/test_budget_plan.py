"""A run budget stops a run cleanly between shards and the run resumes when it is raised; `flywheel plan`
estimates a recipe's calls, tokens and money from a sample."""

import json
import textwrap

import pytest

from dataflywheel.engine.executor import BudgetReached
from dataflywheel.engine.local import LocalExecutor
from dataflywheel.experiments.plan import plan
from dataflywheel.models.client import Model
from dataflywheel.recipe.validate import validate_file
from tests.conftest import write_jsonl
from tests.fakes import ScriptedBackend

MODEL = "m: {backend: openai, model: x, base_url: 'http://127.0.0.1:1/v1', price_per_m_input: 1000000}"


def recipe(tmp_path, budget: str = "", n: int = 8, extra_step: str = ""):
    # every row's prompt is 3 words: 3 prompt tokens = $3 a call at $1 per prompt token
    write_jsonl(
        tmp_path / "pool.jsonl", [{"instruction": f"question number {i}", "output": "x"} for i in range(n)]
    )
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent(f"""
        version: 1
        name: b
        inputs: [{{path: pool.jsonl}}]
        shard_size: 2
        models: {{{MODEL}}}
        {budget}
        steps:
          - generate: {{model: m}}
          {extra_step}
        """)
    )
    recipe, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems, problems
    return recipe, ops


def priced(rec, backend):
    """The recipe's priced model spec, answered by the scripted backend, without the call cache."""
    return {"m": Model("m", rec.models["m"].model_copy(update={"cache": "off"}), backend=backend)}


def executor(recipe, ops, run_dir, backend):
    return LocalExecutor(recipe, ops, run_dir, progress=False, model_loader=lambda r: priced(r, backend))


def test_a_spent_budget_stops_between_shards_and_a_higher_one_resumes(tmp_path):
    backend = ScriptedBackend(default="an answer")
    rec, ops = recipe(tmp_path, "budget: {cost: 10}")
    with pytest.raises(BudgetReached, match=r"budget reached: \$12.0000 of \$10.0000"):
        executor(rec, ops, tmp_path / "run", backend).run()
    # 2 shards (4 calls, $12) were done before the check saw the limit passed: they are kept
    assert len(backend.calls) == 4
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and manifest["stopped"]["budget"] == "cost"
    assert json.loads((tmp_path / "run" / "spent.json").read_text())["cost"] == 12.0
    # the same budget: nothing more is asked
    with pytest.raises(BudgetReached):
        executor(rec, ops, tmp_path / "run", backend).run()
    assert len(backend.calls) == 4
    # a higher one: the run goes on from the kept shards, and ends as an unlimited run does
    rec2, ops2 = recipe(tmp_path, "budget: {cost: 100}")
    result = executor(rec2, ops2, tmp_path / "run", backend).run()
    assert len(backend.calls) == 8 and result.rows_out == 8
    assert json.loads((tmp_path / "run" / "spent.json").read_text())["cost"] == 24.0
    rec3, ops3 = recipe(tmp_path)
    other = executor(rec3, ops3, tmp_path / "free", ScriptedBackend(default="an answer")).run()
    assert result.output_path.read_bytes() == other.output_path.read_bytes()


def test_a_tokens_budget_and_validate_prints_it(tmp_path):
    from typer.testing import CliRunner

    from dataflywheel.cli import app

    backend = ScriptedBackend(default="an answer")  # 3 prompt + 2 completion tokens a call
    rec, ops = recipe(tmp_path, "budget: {tokens: 12}")
    with pytest.raises(BudgetReached, match="20 of 12 tokens"):
        executor(rec, ops, tmp_path / "run", backend).run()
    out = CliRunner().invoke(app, ["validate", str(tmp_path / "r.yaml")]).output
    assert "run budget (model spending): tokens <= 12" in out


def test_plan_scales_a_sample_to_the_whole_input(tmp_path):
    rec, ops = recipe(tmp_path, n=8)
    backend = ScriptedBackend(default="an answer")
    p = plan(rec, ops, rows=2, model_loader=lambda r: priced(r, backend))
    assert p.rows_total == 8 and p.rows_sampled == 2 and len(backend.calls) == 1 + 2  # samples of 1 and 2
    (step,) = p.steps
    assert step.rows_in == 8 and step.calls == 8 and step.tokens == 8 * 5 and step.cost == pytest.approx(24.0)
    assert p.sample_cost == pytest.approx(9.0) and p.budget_stop() is None
    # with a budget of $10 the run would stop in that step (the sample itself ignores the budget)
    rec, ops = recipe(tmp_path, "budget: {cost: 10}", n=8)
    p = plan(rec, ops, rows=2, model_loader=lambda r: priced(r, backend))
    assert p.steps[0].cost == pytest.approx(24.0) and p.budget_stop() == "cost reaches $10 during 01 generate"


def test_plan_keeps_fixed_costs_fixed(tmp_path):
    """An evaluation on a fixed held-out set costs the same whatever the pool's size: not scaled."""
    write_jsonl(tmp_path / "heldout.jsonl", [{"instruction": "a b c", "output": "d e"} for _ in range(3)])
    rec, ops = recipe(tmp_path, n=40, extra_step="- eval_nll: {model: m, data: heldout.jsonl}")
    p = plan(rec, ops, rows=4, model_loader=lambda r: priced(r, ScriptedBackend(default="an answer")))
    generate, evaluate = p.steps
    assert generate.calls == 40 and generate.rows_in == 40
    assert evaluate.calls == 3 and evaluate.rows_in == 40


def test_the_plan_command_prints_a_table_for_a_recipe_without_models(tmp_path):
    from typer.testing import CliRunner

    from dataflywheel.cli import app

    write_jsonl(
        tmp_path / "pool.jsonl", [{"instruction": f"question number {i}", "output": "x y"} for i in range(12)]
    )
    (tmp_path / "r.yaml").write_text(
        "version: 1\nname: p\ninputs: [{path: pool.jsonl}]\nsteps:\n  - text_stats: {}\n  - head: {n: 5}\n"
    )
    out = CliRunner().invoke(app, ["plan", str(tmp_path / "r.yaml"), "--rows", "4"])
    assert out.exit_code == 0, out.output
    assert "plan: p (12 input rows, measured on 4)" in out.output
    assert "01 text_stats" in out.output and "02 head" in out.output and "total" in out.output
    assert "no budget in the recipe" in out.output
