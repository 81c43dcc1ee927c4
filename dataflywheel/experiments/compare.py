"""The data-efficiency experiment: the same model, the same training budget, several candidate datasets
(the full pool, a random k, each selector's k ...), one eval set; a table and a plot of quality against
training tokens (select candidates with a ``tokens:`` budget to compare them at equal cost). Each
candidate is an ordinary recipe run (train, then evaluate), so it is checkpointed, resumable and reused
like any other run.

    version: 1
    name: alpaca-10pct
    base: {backend: hf, model: embedded:smollm2-135m-instruct}
    judge: {backend: openai, model: gpt-4o-mini, base_url: ..., api_key_env: KEY}   # optional
    eval: {data: heldout.jsonl, limit: 100}
    train: {epochs: 1, lora_r: 16}                    # any sft parameter
    candidates:
      full: pool.jsonl
      random_10: runs/random/output.jsonl
      ifd_10: runs/ifd/output.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from dataflywheel.errors import RecipeError
from dataflywheel.models.spec import ModelSpec
from dataflywheel.paths import expand_path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvalSpec(_Strict):
    data: str = Field(description="held-out eval set with reference answers")
    limit: int | None = Field(None, ge=1, description="evaluate only the first rows")
    max_tokens: int = Field(256, ge=1, description="answer length for judged answers")
    judge_max_tokens: int = Field(2048, ge=1, description="length of the judge's reply (MT-Bench: 2048)")
    judge_limit: int | None = Field(None, ge=1, description="judge only the first rows (default: limit)")


class CompareSpec(_Strict):
    version: int = 1
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    base: ModelSpec
    judge: ModelSpec | None = None
    eval: EvalSpec
    train: dict[str, Any] = Field(default_factory=dict, description="sft parameters for every candidate")
    candidates: dict[str, str] = Field(
        min_length=1, description="name -> dataset file (names: letters, digits, _.-)"
    )
    seed: int = 0


def load_spec(path: Path) -> CompareSpec:
    from pydantic import ValidationError

    from dataflywheel.errors import Problem

    try:
        return CompareSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as e:
        raise RecipeError(
            [Problem(err["msg"], key=".".join(map(str, err["loc"]))) for err in e.errors()], str(path)
        ) from None


def _resolve(base_dir: Path, value: str) -> str:
    value = expand_path(value)
    return value if Path(value).is_absolute() else str((base_dir / value).resolve())


def candidate_recipe(spec: CompareSpec, slug: str, data: str | None, base_dir: Path) -> dict:
    """One candidate as a recipe: train on its data (unless it is the untrained base), then evaluate."""
    models: dict[str, Any] = {"base": spec.base.model_dump()}
    evaluated = "base"
    steps: list[dict] = []
    if data is not None:
        steps.append({"sft": {"model": "base", "output_model": "tuned", **spec.train}})
        evaluated = "tuned"
    eval_data = _resolve(base_dir, spec.eval.data)
    steps.append({"eval_nll": {"model": evaluated, "data": eval_data, "limit": spec.eval.limit}})
    if spec.judge is not None:
        models["judge"] = spec.judge.model_dump()
        steps.append(
            {
                "eval_judge": {
                    "model": evaluated,
                    "judge": "judge",
                    "data": eval_data,
                    "limit": spec.eval.judge_limit or spec.eval.limit,
                    "max_tokens": spec.eval.max_tokens,
                    "judge_max_tokens": spec.eval.judge_max_tokens,
                }
            }
        )
    inputs = [{"path": _resolve(base_dir, data if data is not None else spec.eval.data)}]
    return {
        "version": 1,
        "name": f"{spec.name}-{slug}",
        "inputs": inputs,
        "models": models,
        "steps": steps,
        "seed": spec.seed,
        "on_error": "skip",
    }


def training_tokens(step_dir: str, base: ModelSpec) -> int:
    """Tokens a candidate trains on, under the base model's tokenizer (the default one for a server):
    candidates are compared at equal tokens, so a selection of long rows cannot win by row count."""
    import pyarrow.parquet as pq

    from dataflywheel.lib.tokens import DEFAULT_TOKENIZER, row_tokens

    tokenizer = base.model if base.backend in ("hf", "vllm") else DEFAULT_TOKENIZER
    shards = sorted(Path(step_dir).glob("shard-*.parquet"))
    return int(sum(row_tokens(pq.read_table(s), tokenizer).sum() for s in shards))


def run_compare(path: Path, out_dir: Path, progress: bool = False) -> list[dict]:
    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.recipe.validate import validate_recipe
    from dataflywheel.report import write_report
    from dataflywheel.report.run import build_compare_report, efficiency_svg

    spec = load_spec(path)
    base_dir = path.parent.resolve()
    results = []
    for name, data in [("base (untrained)", None), *spec.candidates.items()]:
        slug = "base" if data is None else name
        raw = candidate_recipe(spec, slug, data, base_dir)
        recipe, ops, problems = validate_recipe(raw, base_dir)
        if problems:
            raise RecipeError(problems, f"{path} candidate '{name}'")
        run = LocalExecutor(recipe, ops, out_dir / "candidates" / slug, progress=progress).run()
        write_report(run.run_dir)
        metrics: dict[str, Any] = {}
        for step in run.steps:
            metrics.update(step.stats.get("metrics", {}))
        results.append(
            {
                "candidate": name,
                "rows": 0 if data is None else run.steps[0].rows_out,
                "tokens": 0 if data is None else training_tokens(run.steps[0].dir, spec.base),
                "nll": metrics.get("nll"),
                "perplexity": metrics.get("perplexity"),
                "win_rate": metrics.get("win_rate"),
                "win_rate_ci95": metrics.get("ci95"),
                "judged": metrics.get("judged"),
                "unparsed_verdicts": metrics.get("unparsed_verdicts"),
                "run": str(run.run_dir),
            }
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    (out_dir / "efficiency.svg").write_text(
        efficiency_svg(results, "nll", "held-out response NLL (lower is better)", name="efficiency")
    )
    build_compare_report(out_dir, path.read_text(encoding="utf-8"), [dict(r) for r in results])
    return results
