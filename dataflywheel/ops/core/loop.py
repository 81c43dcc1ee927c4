from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from dataflywheel.ops.base import Loop, OpParams


class Until(OpParams):
    """Stop early when an evaluator's metric in the body passes a bound (checked after each iteration)."""

    metric: str = Field(description="<evaluator op>.<metric>, e.g. eval_nll.nll")
    below: float | None = Field(None, description="stop once the metric is below this")
    above: float | None = Field(None, description="stop once the metric is above this")

    @model_validator(mode="after")
    def _one_bound(self):
        if (self.below is None) == (self.above is None):
            raise ValueError("give exactly one of below or above")
        if "." not in self.metric:
            raise ValueError("metric must name an evaluator and its metric: <op>.<metric>")
        return self

    def reached(self, value: float | None) -> bool:
        if value is None:
            return False
        return value < self.below if self.below is not None else value > self.above


class RepeatSteps(Loop):
    """Repeat a sub-pipeline ``iterations`` times: generate, judge, train, evaluate, feed back.

    Each iteration runs ``steps`` in its own checkpointed folder (``iter-01``, ``iter-02``, ...), so a
    killed loop resumes at its first unfinished step. Data: each iteration reads the previous one's
    output (``data: previous``) or the loop's input again (``data: initial``). Models: a trainer in the
    body that names its output after its input model (``sft: {model: policy, output_model: policy}``)
    makes ``policy`` the newest checkpoint for the next iteration; every iteration's checkpoint stays
    reachable as ``policy@1``, ``policy@2`` (``policy@0`` is the model before the loop). Generated rows
    carry their ``iteration``. The metrics of the body's evaluators form the loop's value curve (in the
    manifest and the report); ``until`` stops early when one passes a bound.
    """

    class Params(OpParams):
        iterations: int = Field(ge=1, le=1000, description="how many times the steps run at most")
        steps: list[Any] = Field(min_length=1, description="the sub-pipeline: `- op: {params}` items")
        until: Until | None = Field(None, description="stop early: {metric: eval_nll.nll, below: 2.0}")
        data: Literal["previous", "initial"] = Field(
            "previous", description="each iteration reads the previous output, or the loop's input"
        )
