"""Progress bars (rich) that cost nothing when switched off."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress


class _Task:
    def __init__(self, bar: RichProgress | None, task_id: int | None):
        self.bar, self.task_id = bar, task_id

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.task_id, n)

    def update(self, done: int, total: int | None, info: str = "") -> None:
        """Set the task's position (e.g. a trainer's optimizer steps) and its one-line status."""
        if self.bar is not None:
            self.bar.update(self.task_id, completed=done, total=total, info=info)


class Progress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar: RichProgress | None = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self.bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                transient=False,
            )
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
            self.bar = None

    def task(self, description: str, total: int | None) -> _Task:
        if self.bar is None:
            return _Task(None, None)
        return _Task(self.bar, self.bar.add_task(description, total=total, info=""))
