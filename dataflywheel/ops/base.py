"""The operator contract (DESIGN.md section 4).

An operator is a small class with typed parameters (``Params``, a pydantic model that forbids unknown
keys), the columns it reads and writes, and one method to write. Batching, checkpoints, lineage, drop
logging and progress belong to the engine. Scoring is kept apart from deciding: a Scorer only writes
``score_*``/``tag_*``/``embedding_*`` columns; a Filter or a Selector decides from them.

| kind      | writes                        | the engine gives it                     | method      |
|-----------|-------------------------------|-----------------------------------------|-------------|
| Mapper    | changed or new columns        | a batch                                 | ``map``     |
| Scorer    | score/tag/embedding columns   | a batch                                 | ``score``   |
| Filter    | keep or drop, with a reason   | a batch                                 | ``keep``    |
| Selector  | which rows to keep, in order  | its declared columns, whole dataset     | ``select``  |
| Generator | new rows with parents         | a seed shard and its share of the budget| ``generate``|

Trainer (``train``) and Evaluator (``evaluate``) take the same shape; a Loop repeats a sub-pipeline and is
run by the engine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dataflywheel.data import schema as S


class OpParams(BaseModel):
    """Base of every operator's parameters: typed, documented, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BudgetParams(OpParams):
    """Parameters of an op that keeps a budget: exactly one of k (rows or groups), fraction, or tokens.

    Training cost is tokens, so a selection can be held to ``tokens`` of ``tokenizer`` (each row's
    conversation under its chat template): rows are kept in the selector's order of preference while
    they fit, and a selector that favours long rows cannot win by row count alone.
    """

    k: int | None = Field(None, ge=0, description="how many to keep")
    fraction: float | None = Field(None, gt=0, le=1, description="fraction to keep, rounded down")
    tokens: int | None = Field(None, ge=0, description="training tokens to keep at most (see tokenizer)")
    tokenizer: str = Field(
        "embedded:smollm2-135m-instruct", description="tokenizer the tokens budget is counted in"
    )

    @model_validator(mode="after")
    def _one_budget(self):
        if sum(x is not None for x in (self.k, self.fraction, self.tokens)) != 1:
            raise ValueError("give exactly one of k, fraction or tokens")
        return self

    def budget(self, n: int) -> int:
        """The number to keep out of n (a rows budget)."""
        return min(n, self.k if self.k is not None else int(n * self.fraction))

    def keep(self, order: Sequence[int], costs: np.ndarray | None = None) -> np.ndarray:
        """The rows to keep from ``order`` (most preferred first): the first k, or the longest prefix whose
        token ``costs`` (one per row of the table) fit the tokens budget."""
        order = np.asarray(order, dtype=np.int64)
        if self.tokens is None:
            return order[: self.budget(len(order))]
        from dataflywheel.lib.tokens import fit_prefix

        return fit_prefix(order, costs, self.tokens)


def ModelRef(description: str = "name of a model declared under `models:` in the recipe", default: Any = ...):
    """A parameter that names a model of the recipe; validation checks that the name is declared."""
    return Field(default, description=description, json_schema_extra={"model_ref": True})


@dataclass
class OpContext:
    """What the engine hands an operator: the seed, the step, where to write, and the recipe's models."""

    seed: int = 0
    step: int = 0
    iteration: int = 0
    models: dict[str, Any] = field(default_factory=dict)
    base_dir: str | None = None  # the recipe's folder: relative paths in parameters start there
    # in a loop round, the checkpoint each evolving model is now (policy -> policy@1): rows name it
    checkpoints: dict[str, str] = field(default_factory=dict)

    def path(self, value: str) -> str:
        """A path parameter resolved like the recipe's inputs ($VARS expanded, relative to the recipe)."""
        import os

        from dataflywheel.paths import expand_path

        value = expand_path(value)
        return value if os.path.isabs(value) or self.base_dir is None else os.path.join(self.base_dir, value)

    def model(self, name: str) -> Any:
        if name not in self.models:
            raise KeyError(f"model '{name}' is not declared under `models:`; declared: {sorted(self.models)}")
        return self.models[name]


class Op:
    """Base of all operators. Subclasses set ``kind`` (through their family base), ``Params``, and the
    columns they read and write; ``name`` is filled in by the registry."""

    kind: ClassVar[str] = "op"
    name: ClassVar[str] = ""
    Params: ClassVar[type[OpParams]] = OpParams
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    # Model capabilities each ModelRef parameter needs, e.g. {"model": ("chat",)}.
    needs: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Rows per call for row-wise ops; None = one whole shard per call.
    batch_rows: ClassVar[int | None] = None

    def __init__(self, params: OpParams | dict | None = None, ctx: OpContext | None = None, **kwargs: Any):
        if isinstance(params, OpParams):
            self.params = params
        else:
            self.params = self.Params.model_validate({**(params or {}), **kwargs})
        self.ctx = ctx or OpContext()
        # Counts an op keeps while it works (requests, unparsed replies, ...): the engine saves them with
        # each output shard and sums them into the step's stats, so a resumed or distributed step adds up.
        self.stats: Counter = Counter()

    # -- declared IO: override when they depend on parameters
    def input_columns(self) -> list[str]:
        return list(self.reads)

    def output_columns(self) -> list[str]:
        return list(self.writes)

    def columns_after(self, available: Sequence[str]) -> list[str]:
        """The columns a dataset has after this op, given those it had before."""
        out = list(available)
        out += [c for c in self.output_columns() if c not in out]
        return out

    def model_refs(self) -> dict[str, str]:
        """Parameter name -> model name, for every ModelRef parameter that is set."""
        refs = {}
        for name, info in type(self.params).model_fields.items():
            extra = info.json_schema_extra or {}
            value = getattr(self.params, name)
            if isinstance(extra, dict) and extra.get("model_ref") and value is not None:
                refs[name] = value
        return refs

    def model_needs(self) -> dict[str, tuple[str, ...]]:
        """Capabilities each model parameter needs; override when they depend on parameters."""
        return dict(self.needs)

    def setup(self) -> None:
        """Load what the op needs (models, tables) once, before the first batch."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


class Mapper(Op):
    """Changes or adds columns; the same rows come out."""

    kind = "mapper"

    def map(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError


class Scorer(Op):
    """Adds score_*, tag_* or embedding_* columns; never drops a row."""

    kind = "scorer"

    def score(self, batch: pa.Table) -> dict[str, Sequence | pa.Array]:
        raise NotImplementedError


@dataclass
class Decision:
    """A Filter's verdict on a batch: one bool per row, and why the dropped ones were dropped."""

    keep: np.ndarray
    reason: str | list[str | None] = "filtered"
    details: list[str | None] | None = None  # a per-row note for the drop log (e.g. the value that failed)


class Filter(Op):
    """Keeps or drops each row on its own, giving a reason for each drop."""

    kind = "filter"

    def keep(self, batch: pa.Table) -> Decision:
        raise NotImplementedError


@dataclass
class Selection:
    """A Selector's verdict: the positions of the rows to keep, in output order, and why the rest went.

    ``columns`` may annotate every input row (arrays of the input's length, e.g. a cluster id); the kept
    rows carry them on. ``details`` adds a per-row note to the drop log (e.g. "duplicate of <id>") while
    ``reason`` stays groupable. ``stats`` goes to the step's entry in the manifest (e.g. a cluster report).
    """

    indices: np.ndarray
    reason: str | dict[int, str] = "not selected"
    details: dict[int, str] | None = None
    columns: dict[str, Any] | None = None
    stats: dict[str, Any] = field(default_factory=dict)


class Selector(Op):
    """Chooses rows from a global view: it gets its declared columns (and ``id``) for the whole dataset."""

    kind = "selector"

    def select(self, table: pa.Table) -> Selection:
        raise NotImplementedError

    def view_columns(self) -> list[str]:
        """What the engine reads for ``select``: the declared columns, and the content columns (those
        present) when the op keeps a tokens budget, to count each row's tokens."""
        cols = self.input_columns()
        if getattr(self.params, "tokens", None) is not None:
            cols += [c for c in CONTENT_COLUMNS if c not in cols]
        return cols

    def token_costs(self, table: pa.Table) -> np.ndarray:
        """Each row's training tokens under the budget's tokenizer (a tokens budget only)."""
        from dataflywheel.lib.tokens import row_tokens

        return row_tokens(table, self.params.tokenizer)

    def shard_features(self, table: pa.Table) -> dict[str, Any] | None:
        """Per-row work that needs nothing but the row itself (MinHash signatures, say), done shard by
        shard before ``select``: executors run it in parallel (threads locally, tasks on Ray) and hand the
        results to ``select`` as extra columns of its view. ``None``: nothing to precompute."""
        return None


class GenerationBudget(OpParams):
    """How much a generator may make, over the whole step; unset limits are unlimited."""

    rows: int | None = Field(None, ge=0, description="new rows at most")
    tokens: int | None = Field(
        None, ge=0, description="prompt + completion tokens of the op's models at most"
    )
    cost: float | None = Field(
        None, ge=0, description="money spent on the op's models at most (their prices)"
    )

    def share(self, fraction: float, rows_first: int) -> GenerationBudget:
        """The part of the budget one seed shard gets (rows are split by the caller, exactly)."""
        return GenerationBudget(
            rows=rows_first if self.rows is not None else None,
            tokens=None if self.tokens is None else int(self.tokens * fraction),
            cost=None if self.cost is None else self.cost * fraction,
        )


class GeneratorParams(OpParams):
    """Parameters every generator has: its budget, and whether the seeds stay in the output."""

    budget: GenerationBudget = Field(default_factory=GenerationBudget, description="rows, tokens or cost")
    keep_seeds: bool = Field(True, description="the seed rows pass through before the rows made from them")


class Generator(Op):
    """Makes new rows from seeds; each new row names its parents (seed ids) in ``parents``.

    The engine runs it: seed shard k gives output shard k (checkpointed, so a killed run resumes at the
    first missing shard; shards run in parallel on Ray), it splits the budget over the seed shards in
    proportion to their rows and stops a shard's generation when its share is spent, and it writes each
    new row's lineage (``origin`` = the op, ``parents``, ``ops``, ``iteration``, ``origin_model`` = the
    models the op asked) and a unique id. ``generate`` only yields rows from the seeds it is given.
    """

    kind = "generator"
    Params: ClassVar[type[OpParams]] = GeneratorParams

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        raise NotImplementedError


class Trainer(Op):
    """Trains a model on the whole dataset and saves a checkpoint; the rows pass through unchanged.

    The checkpoint becomes a model that later steps (and ``flywheel serve``) can name: ``output_model``.
    """

    kind = "trainer"
    # The engine sets this before ``train``: progress(done, total, text) shows the run's position
    progress: Callable[[int, int | None, str], None] | None = None

    def produced_model(self) -> str | None:
        return getattr(self.params, "output_model", None)

    def train(self, data: pa.Table, out_dir: Path) -> dict[str, Any]:
        """Train on `data` and save a transformers checkpoint in `out_dir`; return statistics."""
        raise NotImplementedError


class Evaluator(Op):
    """Measures a model on an eval set; the pipeline's rows pass through unchanged, the metrics go to the
    step's manifest entry and to ``metrics.json`` in the run directory."""

    kind = "evaluator"

    def evaluate(self) -> dict[str, Any]:
        raise NotImplementedError


class Loop(Op):
    """Repeats a sub-pipeline: its ``body`` (ops built from its ``steps``) runs once per iteration, each
    iteration's data and trained models feeding the next. The engine runs it (each iteration in its own
    checkpointed folder); the recipe validator builds the body."""

    kind = "loop"
    body: list[Op]
    where: list[str]  # each body op's address in the recipe ("3.2": loop step 3, its second step)

    def columns_after(self, available: Sequence[str]) -> list[str]:
        out = list(available)
        for op in getattr(self, "body", []):
            out = op.columns_after(out)
        return out


CONTENT_COLUMNS = (S.MESSAGES, *S.PREFERENCE_COLUMNS)
