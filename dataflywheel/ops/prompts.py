"""Prompt templates live as text files beside their operator (written for this project)."""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def load(package_file: str, name: str) -> str:
    """The template `prompts/<name>` next to the module `package_file`."""
    path = Path(package_file).parent / "prompts" / name
    return path.read_text(encoding="utf-8")


def fill(template: str, **values: str) -> str:
    """str.format without surprises: only the named fields are replaced, other braces stay."""
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out
