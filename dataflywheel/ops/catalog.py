"""The operator catalog, built from each operator's docstring and typed parameters (never written twice)."""

from __future__ import annotations

import inspect

from pydantic_core import PydanticUndefined
from rich.console import Group
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from dataflywheel.ops import registry
from dataflywheel.ops.base import Op


def summary(cls: type[Op]) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.split("\n\n")[0].replace("\n", " ")


def params_rows(cls: type[Op]) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, info in cls.Params.model_fields.items():
        if info.default is PydanticUndefined and info.default_factory is None:
            default = "required"
        else:
            default = repr(info.get_default(call_default_factory=True))
        typ = getattr(info.annotation, "__name__", None) or str(info.annotation).replace("typing.", "")
        rows.append((name, typ, default, info.description or ""))
    return rows


def _placeholder(name: str, annotation: object) -> object:
    text = str(annotation)
    if text.startswith(("list", "typing.List")) or annotation is list:
        return [f"<{name}>"]
    if text.startswith(("dict", "typing.Dict")) or annotation is dict:
        return {}
    if annotation is int:
        return 1
    if annotation is float:
        return 1.0
    return f"<{name}>"


def example(cls: type[Op]) -> Op:
    """The op with its default parameters, required ones shown as ``<name>`` (never validated, never run):
    what its columns are with the defaults."""
    values = {}
    for name, info in cls.Params.model_fields.items():
        if info.default is PydanticUndefined and info.default_factory is None:
            values[name] = _placeholder(name, info.annotation)
        else:
            values[name] = info.get_default(call_default_factory=True)
    return cls(cls.Params.model_construct(**values))


def entry(name: str) -> dict:
    cls = registry.get(name)
    op = example(cls)
    return {
        "name": name,
        "kind": cls.kind,
        "summary": summary(cls),
        "doc": inspect.getdoc(cls) or "",
        "reads": op.input_columns(),
        "writes": op.output_columns(),
        "params": params_rows(cls),
    }


def table() -> Table:
    view = Table(title="dataflywheel operators (`flywheel ops NAME` for one)")
    view.add_column("name", style="bold")
    view.add_column("kind")
    view.add_column("what it does")
    for name in registry.names():
        e = entry(name)
        view.add_row(name, e["kind"], escape(e["summary"]))
    return view


def describe(name: str) -> Group:
    e = entry(name)
    params = Table(title="parameters", show_lines=False)
    for col in ("name", "type", "default", "description"):
        params.add_column(col)
    for row in e["params"]:
        params.add_row(*(escape(str(c)) for c in row))
    io_line = f"**kind:** {e['kind']}"
    if e["reads"] or e["writes"]:
        # code spans: Markdown would take a "<column>" placeholder for an HTML tag and drop it
        reads, writes = (", ".join(f"`{c}`" for c in e[k]) or "-" for k in ("reads", "writes"))
        io_line += f"  **reads:** {reads}  **writes:** {writes}"
        io_line += "  (with the default parameters; `<name>` is a required one)"
    return Group(Markdown(f"# {name}\n\n{e['doc']}\n\n{io_line}"), params)
