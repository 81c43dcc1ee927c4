"""`flywheel inspect`: what a dataset is, at a glance."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from dataflywheel.data import io
from dataflywheel.data import schema as S

BAR = 40


@dataclass
class FieldStats:
    name: str
    present: int = 0
    types: Counter = field(default_factory=Counter)
    lengths: list[int] = field(default_factory=list)


@dataclass
class Report:
    path: str
    format: str
    rows: int
    dropped: list[io.Dropped]
    fields: dict[str, FieldStats]
    turns: Counter
    response_chars: np.ndarray
    prompt_chars: np.ndarray
    samples: list[dict]


def inspect_file(path: str, fmt: str = "auto") -> Report:
    if fmt == "auto":
        fmt, _ = io.detect_format(path)
    fields: dict[str, FieldStats] = {}
    turns: Counter = Counter()
    resp, prompt, samples, dropped, rows = [], [], [], [], 0
    for batch in io.read_canonical(path, fmt, on_error="skip"):
        dropped += batch.dropped
        for row in batch.rows:
            rows += 1
            if len(samples) < 5:
                samples.append(row)
            for key, value in row.items():
                if key in (S.ID, *S.LINEAGE_COLUMNS):
                    continue
                st = fields.setdefault(key, FieldStats(key))
                if value is None:
                    continue
                st.present += 1
                st.types[type(value).__name__] += 1
                if isinstance(value, str | list):
                    st.lengths.append(len(value))
            msgs = row.get(S.MESSAGES)
            if msgs is None:
                msgs = list(row[S.PROMPT]) + list(row[S.CHOSEN])
            turns[sum(m["role"] == "assistant" for m in msgs)] += 1
            resp.append(len(S.last_turn(msgs, "assistant") or ""))
            prompt.append(len(S.conversation_text(msgs, ("system", "user"))))
    return Report(path, fmt, rows, dropped, fields, turns, np.array(resp), np.array(prompt), samples)


def histogram(values: np.ndarray, bins: int = 10) -> list[tuple[str, int]]:
    """Log-spaced bins (lengths span orders of magnitude), as (label, count)."""
    if len(values) == 0:
        return []
    hi = max(int(values.max()), 1)
    edges = np.unique(np.concatenate([[0], np.geomspace(1, hi + 1, bins)]).astype(int))
    counts, _ = np.histogram(values, bins=edges)
    return [(f"{edges[i]:>6}-{edges[i + 1] - 1:<6}", int(c)) for i, c in enumerate(counts)]


def render(report: Report, console: Console, samples: int = 2) -> None:
    console.print(
        f"[bold]{report.path}[/]  format: [bold]{report.format}[/]  rows: [bold]{report.rows:,}[/]"
        + (f"  bad rows: [red]{len(report.dropped)}[/]" if report.dropped else "")
    )
    for d in report.dropped[:5]:
        console.print(f"  [red]bad[/] {d.detail}", highlight=False)
    stats = Table(title="fields")
    for col in ("field", "present", "types", "mean len", "min", "max"):
        stats.add_column(col)
    for st in report.fields.values():
        lens = np.array(st.lengths) if st.lengths else None
        stats.add_row(
            st.name,
            f"{st.present:,}",
            ", ".join(f"{t}" for t in st.types),
            f"{lens.mean():.1f}" if lens is not None else "",
            str(lens.min()) if lens is not None else "",
            str(lens.max()) if lens is not None else "",
        )
    console.print(stats)
    console.print(
        "assistant turns per row: " + ", ".join(f"{k}: {v}" for k, v in sorted(report.turns.items()))
    )
    for title, values in (
        ("response length (characters)", report.response_chars),
        ("prompt length (characters)", report.prompt_chars),
    ):
        hist = histogram(values)
        if not hist:
            continue
        top = max(c for _, c in hist) or 1
        console.print(
            f"\n[bold]{title}[/]  median {int(np.median(values))}, p95 {int(np.percentile(values, 95))}"
        )
        for label, count in hist:
            console.print(f"  {label} {'█' * round(BAR * count / top):<{BAR}} {count}", highlight=False)
    for row in report.samples[:samples]:
        console.print()
        console.print(_sample(row))


def _sample(row: dict[str, Any]) -> Table:
    view = Table(title=f"sample {row[S.ID]}", show_header=False, show_lines=True)
    view.add_column("role", style="bold")
    view.add_column("content")
    msgs = row.get(S.MESSAGES)
    if msgs is None:
        msgs = list(row[S.PROMPT]) + [
            {"role": "chosen", "content": row[S.CHOSEN][-1]["content"]},
            {"role": "rejected", "content": row[S.REJECTED][-1]["content"]},
        ]
    for m in msgs:
        text = m["content"]
        view.add_row(m["role"], text if len(text) < 600 else text[:600] + " ...")
    return view
