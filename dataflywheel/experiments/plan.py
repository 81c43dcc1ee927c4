"""`flywheel plan`: what a recipe will cost before it runs, from two measured samples.

The recipe runs twice in a scratch directory, on the first ``rows // 2`` and on the first ``rows`` rows
of each input, with the call cache off so every call is really made and timed. Each step's model calls,
tokens, money (the models' prices) and seconds are fitted as a fixed part plus a part per row the step
reads (loading a model, or scoring a fixed eval set, is the fixed part), and read off at the rows the
step would get from the whole input (its sampled rows times rows in the inputs / rows sampled). A step
whose rows do not grow with the sample (after a selection of k) is taken as measured.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from dataflywheel.data import io
from dataflywheel.recipe.models import Recipe, RunBudget


@dataclass
class StepEstimate:
    label: str
    rows_in: float
    calls: float
    tokens: float
    cost: float
    seconds: float


@dataclass
class Plan:
    rows_total: int
    rows_sampled: int
    steps: list[StepEstimate] = field(default_factory=list)
    budget: RunBudget = field(default_factory=RunBudget)
    sample_cost: float = 0.0

    @property
    def totals(self) -> StepEstimate:
        return StepEstimate(
            "total",
            self.rows_total,
            sum(s.calls for s in self.steps),
            sum(s.tokens for s in self.steps),
            sum(s.cost for s in self.steps),
            sum(s.seconds for s in self.steps),
        )

    def budget_stop(self) -> str | None:
        """Where the recipe's budget would stop the run, by the estimate (None: it would not)."""
        cost = tokens = 0.0
        for s in self.steps:
            cost, tokens = cost + s.cost, tokens + s.tokens
            if self.budget.cost is not None and cost >= self.budget.cost:
                return f"cost reaches ${self.budget.cost:g} during {s.label}"
            if self.budget.tokens is not None and tokens >= self.budget.tokens:
                return f"tokens reach {self.budget.tokens:,} during {s.label}"
        return None


def count_rows(recipe: Recipe) -> int:
    """Rows the inputs hold (as the read step would keep them, `limit` applied)."""
    total = 0
    for spec in recipe.inputs:
        path = recipe.input_path(spec)
        on_error = spec.on_error or recipe.on_error
        n = 0
        for batch in io.read_canonical(
            path, spec.format, spec.split, on_error, spec.name, fields=spec.fields
        ):
            n += batch.table.num_rows
            if spec.limit is not None and n >= spec.limit:
                n = spec.limit
                break
        total += n
    return total


def plan(recipe: Recipe, ops: list, rows: int = 8, model_loader=None) -> Plan:
    """Run ``recipe`` on two samples (``rows // 2`` and ``rows`` rows per input) and extrapolate each
    step's spending to the whole input (see the module docstring)."""
    total = count_rows(recipe)
    small = _sample(recipe, ops, max(1, rows // 2), model_loader)
    large = _sample(recipe, ops, rows, model_loader)
    read = large[0]["rows_out"] if large else 0
    scale = total / read if read else 0.0
    out = Plan(total, read, budget=recipe.budget)
    before = {_label(s): s for s in small[1:]}
    for s in large[1:]:
        if s.get("kind") == "loop":
            continue
        label = _label(s)
        a = _measures(before.get(label, s))
        b = _measures(s)
        out.sample_cost += a["cost"] + b["cost"]
        r1, r2 = before.get(label, s)["rows_in"], s["rows_in"]
        n = r2 * scale
        fit = {k: _line(a[k], b[k], r1, r2, n) for k in ("calls", "tokens", "cost", "seconds")}
        out.steps.append(StepEstimate(label, n, fit["calls"], fit["tokens"], fit["cost"], fit["seconds"]))
    return out


def _sample(recipe: Recipe, ops: list, rows: int, model_loader) -> list[dict]:
    from dataflywheel.engine.local import LocalExecutor

    sample = recipe.model_copy(
        update={
            "inputs": [s.model_copy(update={"limit": min(rows, s.limit or rows)}) for s in recipe.inputs],
            "budget": RunBudget(),
            "models": {n: m.model_copy(update={"cache": "off"}) for n, m in recipe.models.items()},
        }
    )
    sample._base_dir = recipe._base_dir
    with tempfile.TemporaryDirectory(prefix="flywheel-plan-") as scratch:
        where = Path(scratch) / "run"
        LocalExecutor(sample, ops, where, progress=False, model_loader=model_loader).run(fresh=True)
        return orjson.loads((where / "manifest.json").read_bytes())["steps"]


def _line(v1: float, v2: float, r1: float, r2: float, n: float) -> float:
    """The value at n rows of the line through (r1, v1) and (r2, v2); v2 when the rows did not change."""
    if r2 == r1:
        return v2
    return max(0.0, v2 + (v2 - v1) * (n - r2) / (r2 - r1))


def _label(step: dict) -> str:
    return f"{step['index']:02d} {step['op']}" + (f" @{step['iteration']}" if step.get("iteration") else "")


def _measures(step: dict) -> dict[str, float]:
    usage = (step.get("stats") or {}).get("models", {}) or {}
    return {
        "calls": sum(u.get("requests", 0) for u in usage.values()),
        "tokens": sum(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) for u in usage.values()),
        "cost": sum(u.get("cost", 0.0) for u in usage.values()),
        "seconds": step.get("seconds", 0.0),
    }
