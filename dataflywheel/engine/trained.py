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


def previous_models(models: dict, iteration: int) -> dict:
    """``name@previous`` for every model in loop round ``iteration``: the checkpoint the round started
    from (``name@{iteration - 1}``, or ``name@0`` in round 1 once the round has trained it), or the model
    itself when the round has not replaced it (yet)."""
    out = {}
    for name, model in models.items():
        if "@" not in name:
            out[f"{name}@previous"] = models.get(f"{name}@{iteration - 1}", model)
    return out


def checkpoint_name(name: str, models: dict) -> str:
    """The name that pins down which checkpoint ``name`` is now: ``policy@1`` when round 1's checkpoint is
    the current ``policy``, else the name itself."""
    model = models.get(name)
    rounds = [
        int(k.rsplit("@", 1)[1])
        for k, m in models.items()
        if m is model and k.startswith(f"{name}@") and k.rsplit("@", 1)[1].isdigit()
    ]
    return f"{name}@{max(rounds)}" if rounds else name


def trained_model(op: Trainer, result: StepResult, models: dict):
    """The checkpoint a trainer step saved, as a named model for the steps after it."""
    from dataflywheel.models.client import Model
    from dataflywheel.recipe.models import ModelSpec

    base = models.get(op.params.model)
    # the checkpoint runs as its base did: device, precisions, batch size
    same = (
        {k: getattr(base.spec, k) for k in ("device", "dtype", "generate_dtype", "batch_size")}
        if base is not None
        else {}
    )
    spec = ModelSpec(backend="hf", model=str(Path(result.dir) / "checkpoint"), **same)
    cache = base.cache if base is not None else None
    return Model(op.produced_model(), spec, cache)
