from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from dataflywheel.ops.base import Decision, Filter, OpParams


class ColumnFilter(Filter):
    """Keep rows whose column value lies within [min, max], equals a value, or is one of several values.

    The decision half of "score, then decide": pair it with any scorer (``score_*`` columns) or tag.
    A row whose value is missing is dropped unless ``keep_missing`` is set.
    """

    class Params(OpParams):
        column: str = Field(description="column to test, e.g. score_alpagasus or tag_lang")
        min: float | None = Field(None, description="keep rows with value >= min (> min if not inclusive)")
        max: float | None = Field(None, description="keep rows with value <= max (< max if not inclusive)")
        equals: str | float | bool | None = Field(None, description="keep rows whose value equals this")
        one_of: list[str | float | bool] | None = Field(
            None, description="keep rows whose value is one of these"
        )
        inclusive: bool = Field(True, description="whether min and max themselves are kept")
        keep_missing: bool = Field(False, description="keep rows where the column is null")

        @model_validator(mode="after")
        def _one_condition(self):
            if self.min is None and self.max is None and self.equals is None and self.one_of is None:
                raise ValueError("give at least one of min, max, equals, one_of")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
            return self

    def input_columns(self) -> list[str]:
        return [self.params.column]

    def keep(self, batch: pa.Table) -> Decision:
        p = self.params
        col = batch.column(p.column)
        mask = pc.invert(pc.is_null(col))
        if p.min is not None:
            mask = pc.and_(mask, (pc.greater_equal if p.inclusive else pc.greater)(col, p.min))
        if p.max is not None:
            mask = pc.and_(mask, (pc.less_equal if p.inclusive else pc.less)(col, p.max))
        if p.equals is not None:
            mask = pc.and_(mask, pc.equal(col, pa.scalar(p.equals, col.type)))
        if p.one_of is not None:
            mask = pc.and_(mask, pc.is_in(col, pa.array(p.one_of, col.type)))
        keep = np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
        nulls = np.asarray(pc.is_null(col).to_numpy(zero_copy_only=False), dtype=bool)
        if p.keep_missing:
            keep |= nulls
        # One reason per kind of failure (the value is in the dropped row), so drop-log counts group.
        failed = f"{p.column} {self._condition()}"
        reasons: list[str | None] = [None] * len(keep)
        details: list[str | None] = [None] * len(keep)
        values = col.to_pylist() if not keep.all() else []
        for i in np.flatnonzero(~keep):
            reasons[i] = f"{p.column} is missing" if nulls[i] else failed
            details[i] = None if nulls[i] else f"{p.column} = {values[i]!r}"
        return Decision(keep, reasons, details)

    def _condition(self) -> str:
        p, parts = self.params, []
        if p.min is not None:
            parts.append(f"{'>=' if p.inclusive else '>'} {p.min:g}")
        if p.max is not None:
            parts.append(f"{'<=' if p.inclusive else '<'} {p.max:g}")
        if p.equals is not None:
            parts.append(f"== {p.equals!r}")
        if p.one_of is not None:
            parts.append(f"in {p.one_of!r}")
        return "not " + " and ".join(parts)
