"""What two answers must share to count as the same answer (self-consistency, answer checks)."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_answer(text: str, extract: str) -> str | None:
    """The part of an answer two answers must share to agree: the last number (commas and a trailing
    ".0" dropped), the last non-empty line, or the whole text; lower-cased, whitespace collapsed."""
    if extract == "last_number":
        found = _NUMBER.findall(text)
        if not found:
            return None
        value = found[-1].replace(",", "")
        return value[:-2] if value.endswith(".0") else value
    if extract == "last_line":
        lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
        text = lines[-1] if lines else ""
    norm = " ".join(text.lower().split())
    return norm or None
