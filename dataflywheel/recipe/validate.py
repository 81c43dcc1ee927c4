"""Load a recipe and check all of it before any work runs; every problem is reported at once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dataflywheel.data import formats, io, readers
from dataflywheel.data import schema as S
from dataflywheel.errors import DataError, FlywheelError, Problem, RecipeError
from dataflywheel.models.client import BACKEND_CAPABILITIES
from dataflywheel.ops import registry
from dataflywheel.ops.base import Evaluator, Loop, Op
from dataflywheel.paths import expand_path, unset_variables
from dataflywheel.recipe.models import Recipe, StepSpec


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _parse_steps(raw_steps: Any, problems: list[Problem]) -> list[dict]:
    """`- op: {params}` or a bare `- op` -> {"op", "params"}; anything else is a problem."""
    if raw_steps is None:
        return []
    if not isinstance(raw_steps, list):
        problems.append(
            Problem("expected a list of steps like `- filter: {column: score_x, min: 1}`", key="steps")
        )
        return []
    out = []
    for i, item in enumerate(raw_steps, start=1):
        if isinstance(item, str):
            out.append({"op": item, "params": {}})
        elif isinstance(item, dict) and len(item) == 1:
            ((op, params),) = item.items()
            if params is None:
                params = {}
            if not isinstance(params, dict):
                problems.append(
                    Problem(f"parameters must be a mapping, got {type(params).__name__}", i, str(op))
                )
                params = {}
            out.append({"op": str(op), "params": params})
        else:
            problems.append(Problem("expected `- op_name: {param: value}` (one key per step)", i))
            out.append({"op": "", "params": {}})
    return out


def load_recipe(path: str | Path) -> Recipe:
    """Read, check and return a recipe; raises RecipeError listing every problem."""
    recipe, _, problems = validate_file(path)
    if problems:
        raise RecipeError(problems, str(path))
    return recipe


def validate_file(path: str | Path, check_data: bool = True) -> tuple[Recipe | None, list[Op], list[Problem]]:
    path = Path(path)
    if not path.exists():
        return None, [], [Problem(f"recipe file not found: {path}")]
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        return None, [], [Problem(f"not valid YAML: {e}")]
    except UnicodeDecodeError as e:
        return None, [], [Problem(f"not UTF-8 text: {e}")]
    return validate_recipe(raw, path.parent.resolve(), check_data)


def validate_recipe(
    raw: Any, base_dir: Path | None = None, check_data: bool = True
) -> tuple[Recipe | None, list[Op], list[Problem]]:
    """Check a recipe (parsed YAML): schema, op names, parameters, models, paths and the column flow."""
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        return None, [], [Problem("a recipe is a mapping with name, inputs, steps, output")]
    raw = dict(raw)
    raw["steps"] = _parse_steps(raw.get("steps"), problems)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        for err in e.errors():
            loc = err["loc"]
            if loc and loc[0] == "steps" and len(loc) > 1 and isinstance(loc[1], int):
                problems.append(Problem(err["msg"], loc[1] + 1, key=_loc(loc[2:])))
            else:
                problems.append(Problem(err["msg"], key=_loc(loc)))
        # A wrong top-level key (a typo, a bad value) should not hide the steps' problems: check the rest.
        bad = {err["loc"][0] for err in e.errors() if err["loc"]}
        if bad & {"inputs", "steps", "models"}:
            return None, [], problems
        rest = {k: v for k, v in raw.items() if k not in bad}
        if "name" in bad:
            rest["name"] = "recipe"
        try:
            recipe = Recipe.model_validate(rest)
        except ValidationError:
            return None, [], problems
    if base_dir is not None:
        recipe._base_dir = Path(base_dir)

    ops = _build_ops(recipe, problems)
    if check_data:
        available = _input_columns(recipe, problems)
        if available is not None:
            _check_flow(recipe, ops, available, problems)
    _check_output(recipe, problems)
    return recipe, ops, problems


def _build_ops(recipe: Recipe, problems: list[Problem]) -> list[Op]:
    ops: list[Op] = []
    produced: dict[str, str] = {}  # models trained by earlier steps -> backend
    for i, step in enumerate(recipe.steps, start=1):
        op = _build_op(i, step, recipe, problems)
        if op is None:
            continue
        ops.append(op)
        _check_models(recipe, op, i, step.op, produced, problems, in_loop=False)
        if isinstance(op, Loop):
            op.body = _build_body(recipe, op, i, produced, problems)
    return ops


def _build_body(
    recipe: Recipe, loop: Loop, i: int, produced: dict[str, str], problems: list[Problem]
) -> list[Op]:
    """A loop's steps, addressed as "i.j" in problems; models its trainers make are known after them."""
    inner: list[Problem] = []
    body: list[Op] = []
    loop.where = []  # each body op's address in problems ("3.2")
    for j, raw in enumerate(_parse_steps(loop.params.steps, inner), start=1):
        op = _build_op(i, StepSpec(**raw), recipe, inner, where=f"{i}.{j}")
        if op is None:
            continue
        if isinstance(op, Loop):
            inner.append(Problem("a loop inside a loop is not supported; flatten it", f"{i}.{j}", raw["op"]))
            continue
        body.append(op)
        loop.where.append(f"{i}.{j}")
        _check_models(recipe, op, f"{i}.{j}", raw["op"], produced, inner, in_loop=True)
    for p in inner:
        problems.append(p if p.step is not None else Problem(p.message, i, "loop", "steps"))
    until = loop.params.until
    if until is not None:
        evaluators = {op.name for op in body if isinstance(op, Evaluator)}
        if until.metric.split(".")[0] not in evaluators:
            problems.append(
                Problem(
                    f"until.metric '{until.metric}' must name an evaluator in the loop's steps "
                    f"(there: {sorted(evaluators) or 'none'})",
                    i,
                    "loop",
                    "until.metric",
                )
            )
    return body


def _check_models(
    recipe: Recipe,
    op: Op,
    where: int | str,
    name: str,
    produced: dict[str, str],
    problems: list[Problem],
    in_loop: bool,
) -> None:
    for param, model in op.model_refs().items():
        if param == "output_model":
            continue
        if model.endswith("@previous"):
            if not in_loop:
                problems.append(
                    Problem(
                        f"'{model}' is the checkpoint a loop round started from: only steps inside a loop "
                        "can name it",
                        where,
                        name,
                        param,
                    )
                )
                continue
            model = model.removesuffix("@previous")
        problem = _model_problem(recipe, op, param, model, produced)
        if problem:
            problems.append(Problem(problem, where, name, param))
    made = op.produced_model() if hasattr(op, "produced_model") else None
    if made:
        # In a loop a trainer may name its output after its input: the model evolves, iteration by iteration.
        evolving = in_loop and made == getattr(op.params, "model", None)
        if not evolving and (made in recipe.models or made in produced):
            problems.append(Problem(f"model name '{made}' is already taken", where, name, "output_model"))
        produced[made] = "hf"


def _model_problem(recipe: Recipe, op: Op, param: str, model: str, produced: dict[str, str]) -> str | None:
    """An undeclared model, or one whose backend cannot do what the op needs."""
    if model in produced:
        backend = produced[model]
    elif model not in recipe.models:
        declared = sorted(recipe.models) + sorted(produced)
        return (
            f"model '{model}' is not declared under `models:` nor trained by an earlier step "
            f"(declared: {declared or 'none'})"
        )
    else:
        backend = recipe.models[model].backend
    can = BACKEND_CAPABILITIES.get(backend, frozenset())
    missing = [c for c in op.model_needs().get(param, ()) if c not in can]
    if missing:
        can_text = ", ".join(sorted(can))
        return f"model '{model}' ({backend} backend) cannot {', '.join(missing)}; it can: {can_text}"
    return None


def _build_op(
    i: int, step: StepSpec, recipe: Recipe, problems: list[Problem], where: int | str | None = None
) -> Op | None:
    where = i if where is None else where
    if not step.op:
        return None
    try:
        cls = registry.get(step.op)
    except registry.UnknownOpError as e:
        problems.append(Problem(str(e), where, step.op))
        return None
    try:
        from dataflywheel.ops.base import OpContext

        return cls(step.params, OpContext(seed=recipe.seed, step=i, base_dir=str(recipe.base_dir)))
    except ValidationError as e:
        for err in e.errors():
            key = _loc(err["loc"]) or None
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                valid = ", ".join(cls.Params.model_fields)
                msg = f"unknown parameter; valid parameters: {valid}"
            problems.append(Problem(msg, where, step.op, key))
    return None


def _input_columns(recipe: Recipe, problems: list[Problem]) -> list[str] | None:
    """Canonical columns every input will have, found by reading the first rows of each."""
    common: list[str] | None = None
    for n, spec in enumerate(recipe.inputs):
        key = f"inputs.{n}.path"
        if unset := unset_variables(spec.path):
            names = ", ".join(f"${v}" for v in unset)
            problems.append(
                Problem(f"{names} in '{spec.path}' is not set (set it, or write ${{VAR:-default}})", key=key)
            )
            continue
        path = recipe.input_path(spec)
        if spec.format != "auto" and spec.format not in formats.FORMATS:
            problems.append(
                Problem(
                    f"unknown format '{spec.format}'; valid: auto, {', '.join(formats.FORMATS)}",
                    key=f"inputs.{n}.format",
                )
            )
            continue
        if path.startswith("hf://"):
            continue  # reaching the hub is the run's business; validation stays offline
        if path.endswith(".gz") and os.path.isfile(path) and (problem := readers.gzip_problem(path)):
            problems.append(Problem(problem, key=key))
            continue
        try:
            fields = spec.fields or None
            fmt = (
                spec.format if spec.format != "auto" else io.detect_format(path, spec.split, fields=fields)[0]
            )
            cols = _peek_columns(path, fmt, spec.split, fields)
        except DataError as e:
            problems.append(Problem(e.describe(), key=key))
            continue
        common = cols if common is None else [c for c in common if c in cols]
    return common


def _peek_columns(
    path: str, fmt: str, split: str | None, fields: dict[str, str] | None = None, peek: int = 20
) -> list[str]:
    cols: dict[str, None] = {}
    for n, raw in enumerate(io.iter_raw(path, split, fields)):
        if n >= peek and (cols or n >= readers.LOOK_PAST_BAD_HEAD):  # past a bad head, to a good row
            break
        if raw.error is None:
            try:
                cols.update(dict.fromkeys(formats.to_canonical(raw.value, fmt, raw.where)))
            except DataError:
                continue
    if not cols:
        raise DataError(
            f"no row of the first {readers.LOOK_PAST_BAD_HEAD:,} is valid", None, f"rows in the {fmt} format"
        )
    cols.update(dict.fromkeys((S.ID, *S.LINEAGE_COLUMNS)))
    return list(cols)


def _check_flow(recipe: Recipe, ops: list[Op], available: list[str], problems: list[Problem]) -> None:
    by_step = {op.ctx.step: op for op in ops}
    for i, step in enumerate(recipe.steps, start=1):
        op = by_step.get(i)
        if op is None:
            return  # the flow after a broken step cannot be known
        if isinstance(op, Loop):
            for where, inner in zip(op.where, op.body, strict=True):
                available = _flow_step(inner, where, inner.name, available, problems)
                if available is None:
                    return
            continue
        available = _flow_step(op, i, step.op, available, problems)
        if available is None:
            return
    recipe_output_cols = set(available)
    if recipe.output.format == "preference" and S.CHOSEN not in recipe_output_cols:
        problems.append(
            Problem(
                "output format 'preference' needs chosen/rejected columns; the data is SFT conversations",
                key="output.format",
            )
        )


def _flow_step(
    op: Op, i: int | str, name: str, available: list[str], problems: list[Problem]
) -> list[str] | None:
    """The columns after one step, with a problem for each column it reads that is not there yet."""
    for col in op.input_columns():
        if col in available:
            continue
        key = next(
            (
                k
                for k, v in op.params.model_dump().items()
                if v == col or (isinstance(v, list | dict) and col in v)
            ),
            None,
        )
        problems.append(
            Problem(
                f"column '{col}' is read, but no earlier step writes it and the input does "
                f"not have it (available: {', '.join(available)})",
                i,
                name,
                key,
            )
        )
    try:
        return op.columns_after(available)
    except (ValueError, FlywheelError) as e:
        problems.append(Problem(str(e), i, name))
        return None


def _check_output(recipe: Recipe, problems: list[Problem]) -> None:
    out = recipe.output
    if out.format not in formats.WRITE_FORMATS:
        problems.append(
            Problem(
                f"unknown output format '{out.format}'; valid: {', '.join(formats.WRITE_FORMATS)}",
                key="output.format",
            )
        )
    if out.path is not None:
        try:
            io.kind_of_output(out.path)
        except DataError as e:
            problems.append(Problem(e.describe(), key="output.path"))
        path = Path(expand_path(out.path))
        if not path.is_absolute() and ".." in path.parts:
            problems.append(
                Problem(
                    f"'{out.path}' would leave the run directory; a relative output path stays inside it, "
                    "write an absolute path to put the output elsewhere",
                    key="output.path",
                )
            )
        inputs = {str(Path(recipe.input_path(spec)).resolve()) for spec in recipe.inputs}
        if path.is_absolute() and str(path.resolve()) in inputs:
            problems.append(Problem(f"the output {path} would overwrite an input", key="output.path"))
