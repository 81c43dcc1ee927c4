"""Reading scores and verdicts out of judge replies. A reply that does not contain one is None, never a
guess: the op records it as unparsed."""

from __future__ import annotations

import re

NUMBER = r"(-?\d+(?:\.\d+)?)"
FRACTION = re.compile(NUMBER + r"\s*(?:/|out of)\s*" + NUMBER, re.IGNORECASE)
LABELLED = re.compile(r"(?:score|rating|grade)\s*[:=]?\s*\**\s*" + NUMBER, re.IGNORECASE)
BRACKETED = re.compile(r"\[\[\s*" + NUMBER + r"\s*\]\]")
VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


def parse_score(text: str | None, low: float, high: float) -> float | None:
    """A score in [low, high] from a judge's reply.

    Tried in order: ``[[k]]``; the first line as a number or a fraction ("4", "4.5", "**4**", "4/5",
    "8 out of 10", scaled to the range when the denominator differs); "Score: k" anywhere. Values out
    of range are rejected.
    """
    if not text or not text.strip():
        return None
    candidates = []
    m = BRACKETED.search(text)
    if m:
        candidates.append(float(m.group(1)))
    first = text.strip().splitlines()[0].strip().strip("*#`_ ").rstrip(".")
    m = FRACTION.fullmatch(first) or FRACTION.match(first)
    if m:
        value, scale = float(m.group(1)), float(m.group(2))
        candidates.append(value if scale == high or scale == 0 else value / scale * high)
    else:
        m = re.fullmatch(r"(?:score|rating)?\s*[:=]?\s*" + NUMBER, first, re.IGNORECASE)
        if m:
            candidates.append(float(m.group(1)))
    m = LABELLED.search(text)
    if m:
        candidates.append(float(m.group(1)))
    for value in candidates:
        if low <= value <= high:
            return value
    return None


def parse_verdict(text: str | None) -> str | None:
    """A pairwise verdict: "A", "B" or "C" (tie) from "[[A]]"-style markers."""
    if not text or not text.strip():
        return None
    m = VERDICT.search(text)
    return m.group(1) if m else None


def expected_score(logprobs: list[float], values: list[float]) -> float | None:
    """sum_k v_k p_k with p renormalised over the options (DEITA's and AlpaGasus's expected scores);
    None when the model gives none of the options a finite log-probability (recorded as unparsed)."""
    import numpy as np

    lp = np.asarray(logprobs, dtype=np.float64)
    if not np.isfinite(lp).any():
        return None
    p = np.exp(lp - lp.max())
    return float(np.dot(p / p.sum(), np.asarray(values, dtype=np.float64)))


OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def json_object(text: str | None) -> dict | None:
    """The first flat JSON object in a reply that parses (models wrap JSON in prose and code fences), or
    None."""
    import json

    for m in OBJECT.finditer(text or ""):
        try:
            got = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(got, dict):
            return got
    return None
