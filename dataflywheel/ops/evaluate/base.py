"""Shared pieces of the evaluators: their parameters, the eval set, the candidate's answers."""

from __future__ import annotations

from pydantic import Field

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.models.base import Sampling
from dataflywheel.ops.base import Evaluator, ModelRef, OpParams


class EvalParams(OpParams):
    model: str = ModelRef(description="the model to evaluate (declared, or trained by an earlier step)")
    data: str | None = Field(
        None,
        description="eval set file (any supported format; relative to the recipe); unset: the rows that "
        "reach this step (an evolved set made by an earlier step)",
    )
    limit: int | None = Field(None, ge=1, description="evaluate only the first rows")
    max_tokens: int = Field(256, ge=1, description="answer length for generated answers")


def eval_rows(op: Evaluator) -> list[dict]:
    """The eval set: the ``data`` file, or the rows that reach the step (the engine sets ``op.inputs``)."""
    if op.params.data is None:
        import pyarrow.parquet as pq

        shards = getattr(op, "inputs", None) or []
        rows = [r for shard in shards for r in pq.read_table(shard).to_pylist()]
    else:
        rows = io.read_all(op.ctx.path(op.params.data)).rows
    return rows[: op.params.limit] if op.params.limit else rows


def answers(op: Evaluator, rows: list[dict], model: str | None = None) -> list[str | None]:
    """The candidate's (or ``model``'s) greedy answers to each row's prompt (the conversation without its
    last answer)."""
    prompts = [S.prompt_of(r[S.MESSAGES]) for r in rows]
    llm = op.ctx.model(model or op.params.model)
    results = llm.chat(prompts, Sampling(max_tokens=op.params.max_tokens))
    return [r.text if r.error is None else None for r in results]
