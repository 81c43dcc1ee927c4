"""Sortable HTML tables for the reports (numbers carry their value for sorting)."""

from __future__ import annotations

from html import escape
from typing import Any

from dataflywheel.report import svg


def num(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(num(x) for x in v) + "]"
    if isinstance(v, float | int) and not isinstance(v, bool):
        return svg.fmt(v)
    return escape(str(v)) if v is not None else "n/a"


def table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td data-v="{escape(str(c))}">{num(c)}</td>' if isinstance(c, int | float) else f"<td>{c}</td>"
            for c in r
        )
        + "</tr>"
        for r in rows
    )
    return f'<table class="sortable {cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
