"""Errors that tell the user where the problem is and what would be valid."""

from __future__ import annotations

from dataclasses import dataclass


class FlywheelError(Exception):
    """Base class of every error this package raises on purpose."""


@dataclass
class Location:
    """Where a bad value sits: a file, and a line (text formats) or a row (columnar formats)."""

    path: str
    line: int | None = None
    row: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
        elif self.row is not None:
            where += f" row {self.row}"
        if self.field:
            where += f": field '{self.field}'"
        return where


class DataError(FlywheelError):
    """A row (or a whole file) that cannot be read as the format says.

    ``reason`` is short and stable (it is what the drop log counts); ``where`` says exactly where.
    """

    def __init__(
        self, reason: str, where: Location | None = None, expected: str | None = None, got: str | None = None
    ):
        self.reason = reason
        self.where = where
        self.expected = expected
        self.got = got
        super().__init__(self.describe())

    def describe(self) -> str:
        text = f"{self.where}: {self.reason}" if self.where else self.reason
        if self.expected:
            text += f"; expected {self.expected}"
        if self.got is not None:
            text += f", got {self.got}"
        return text


class RecipeError(FlywheelError):
    """A recipe with one or more problems, all listed at once."""

    def __init__(self, problems: list[Problem], source: str = "recipe"):
        self.problems = problems
        self.source = source
        lines = [f"{source}: {len(problems)} problem(s)"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


@dataclass
class Problem:
    """One thing wrong with a recipe, addressed by step index ("3.2": the second step of loop step 3)
    and key."""

    message: str
    step: int | str | None = None
    op: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        parts = []
        if self.step is not None:
            parts.append(f"step {self.step}" + (f" ({self.op})" if self.op else ""))
        if self.key:
            parts.append(f"key '{self.key}'")
        prefix = ", ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


def short_repr(value: object, limit: int = 60) -> str:
    """A value as it would be shown in an error message, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
