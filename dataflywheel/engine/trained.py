"""Models a run trains: a trainer's checkpoint becomes a named model for the steps after it."""

from __future__ import annotations

from pathlib import Path

from dataflywheel.engine.results import StepResult
from dataflywheel.ops.base import Op, Trainer


def register_trained(op: Op, result: StepResult, models: dict) -> None:
    """A trainer's checkpoint becomes the named model ``output_model`` for the steps after it. In a loop
    round t it is also ``name@t``, and the model it replaces stays reachable as ``name@0``."""
    if not isinstance(op, Trainer) or not op.produced_model():
        return
    name = op.produced_model()
    model = trained_model(op, result, models)
    if result.iteration:
        if name in models and f"{name}@0" not in models:
            models[f"{name}@0"] = models[name]
        models[f"{name}@{result.iteration}"] = model
    models[name] = model


def trained_model(op: Trainer, result: StepResult, models: dict):
    """The checkpoint a trainer step saved, as a named model for the steps after it."""
    from dataflywheel.models.client import Model
    from dataflywheel.recipe.models import ModelSpec

    base = models.get(op.params.model)
    device = base.spec.device if base is not None else "auto"
    spec = ModelSpec(backend="hf", model=str(Path(result.dir) / "checkpoint"), device=device)
    cache = base.cache if base is not None else None
    return Model(op.produced_model(), spec, cache)
