"""What a run says about itself: each step's result, the run's result, and the lock on a run directory."""

from __future__ import annotations

import fcntl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataflywheel.errors import FlywheelError


@dataclass
class StepResult:
    index: int
    op: str
    kind: str
    fingerprint: str
    dir: str
    status: str = "computed"  # computed | reused | resumed
    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    shards_reused: int = 0
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    iteration: int = 0  # the loop round a step ran in (0: not in a loop)


@dataclass
class RunResult:
    run_dir: Path
    output_path: Path | None
    steps: list[StepResult]
    rows_read: int
    rows_out: int

    @property
    def dropped_total(self) -> int:
        return sum(sum(s.dropped.values()) for s in self.steps)


class RunLock:
    """One run per run directory at a time; the OS releases the lock if the process dies."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"

    def __enter__(self) -> RunLock:
        self.fh = open(self.path, "w")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FlywheelError(f"another flywheel run is using {self.path.parent}") from None
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
