"""Where a row came from: its parents, theirs, back to the input rows it descends from.

Every generated row names its ``parents`` (the seed rows its generator was given), its ``origin`` (the
generator, or the input's name), its ``iteration`` (loop round) and the models that made it. A row is
traced through the step that first wrote it: the reader for input rows, the generator for made ones.
Only the lineage columns of every shard are read to walk the tree; texts come from the shards that hold
the rows on the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from dataflywheel.data import schema as S
from dataflywheel.engine.kernels import ORIGIN_MODEL
from dataflywheel.engine.runinfo import load_manifest
from dataflywheel.engine.store import StepStore
from dataflywheel.errors import FlywheelError

_WALK = (S.ID, S.PARENTS, S.ORIGIN, S.ITERATION, ORIGIN_MODEL)


@dataclass
class Ancestor:
    """One row on a lineage path: ``depth`` 0 is the traced row, 1 its parents, and so on."""

    depth: int
    id: str
    origin: str
    iteration: int
    model: str | None
    step: str  # the step that first wrote the row ("00 read" for input rows)
    parents: list[str]
    text: str
    missing: bool = False  # named as a parent, but no step of this run holds it


class RowIndex:
    """The lineage columns of every row of a run, by id, from the step that first wrote it."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.rows: dict[str, dict] = {}
        for s in load_manifest(run_dir)["steps"]:
            if s.get("kind") == "loop":
                continue
            label = f"{s['index']:02d} {s['op']}" + (f" @{s['iteration']}" if s.get("iteration") else "")
            for shard in StepStore(self.run_dir / s["dir"]).shards():
                names = pq.read_schema(shard).names
                table = pq.read_table(shard, columns=[c for c in _WALK if c in names])
                for row in table.to_pylist():
                    if row[S.ID] not in self.rows:
                        self.rows[row[S.ID]] = {**row, "step": label, "shard": shard}

    def trace(self, row_id: str, text_limit: int = 120) -> list[Ancestor]:
        """The row and each of its ancestors once, breadth first (parents before grandparents)."""
        if row_id not in self.rows:
            raise FlywheelError(f"no row with id '{row_id}' in {self.run_dir}")
        out: list[Ancestor] = []
        seen = {row_id}
        frontier = [row_id]
        depth = 0
        while frontier:
            nxt = []
            for rid in frontier:
                row = self.rows.get(rid)
                if row is None:
                    out.append(Ancestor(depth, rid, "", 0, None, "", [], "", missing=True))
                    continue
                parents = list(row.get(S.PARENTS) or [])
                out.append(
                    Ancestor(
                        depth,
                        rid,
                        row.get(S.ORIGIN) or "",
                        int(row.get(S.ITERATION) or 0),
                        row.get(ORIGIN_MODEL),
                        row["step"],
                        parents,
                        "",
                    )
                )
                for p in parents:
                    if p not in seen:
                        seen.add(p)
                        nxt.append(p)
            frontier, depth = nxt, depth + 1
        self._fill_texts(out, text_limit)
        return out

    def _fill_texts(self, path: list[Ancestor], limit: int) -> None:
        by_shard: dict[Path, list[Ancestor]] = {}
        for a in path:
            if not a.missing:
                by_shard.setdefault(self.rows[a.id]["shard"], []).append(a)
        for shard, members in by_shard.items():
            names = pq.read_schema(shard).names
            cols = [c for c in (S.ID, S.MESSAGES, S.PROMPT) if c in names]
            wanted = {a.id for a in members}
            texts = {r[S.ID]: row_text(r, limit) for r in pq.read_table(shard, columns=cols).to_pylist()
                     if r[S.ID] in wanted}  # fmt: skip
            for a in members:
                a.text = texts.get(a.id, "")


def row_text(row: dict, limit: int = 160) -> str:
    """A row's first user turn (or first message), whitespace-normalised and cut to ``limit``."""
    msgs = row.get(S.MESSAGES) or row.get(S.PROMPT) or []
    users = [m["content"] for m in msgs if m and m.get("role") == "user" and m.get("content")]
    text = S.norm_text(users[0] if users else (msgs[0]["content"] if msgs else ""))
    return text if len(text) <= limit else text[: limit - 1] + "…"
