"""Reading scores and verdicts out of judge replies. A reply that does not contain one is None, never a
guess: the op records it as unparsed."""

from __future__ import annotations

import re

from dataflywheel.models.constraint import CHARS_PER_TOKEN, Constraint, Part, ending_shape, escape

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


# ---------------------------------------------------------------- the shapes these readers read
# A shape leaves the reasoning free and fixes what the parser reads (structured generation,
# models/constraint.py). Free text is bounded in tokens, so what follows it always fits within
# max_tokens, even when a small model falls into a loop of one-character tokens; the pieces after free
# text need at most RESERVE_TOKENS.
RESERVE_TOKENS = 12


def free_tokens(max_tokens: int, share: float = 1.0) -> int:
    """Tokens of free text a reply of ``max_tokens`` can hold (``share`` of them for one of several)."""
    return max(1, int((max_tokens - RESERVE_TOKENS) * share))


def free_chars(max_tokens: int) -> int:
    """Characters of free text for shapes that stay a regex (bounded in characters, not tokens)."""
    return CHARS_PER_TOKEN * free_tokens(max_tokens)


def integers(low: int, high: int) -> str:
    """A regex alternation of the integers low..high, longest first ("10" before "1")."""
    values = sorted((str(k) for k in range(int(low), int(high) + 1)), key=lambda v: (-len(v), v))
    return "(" + "|".join(values) + ")"


def bracketed_score_shape(low: int, high: int, max_tokens: int) -> Constraint:
    """Free reasoning, then ``[[k]]`` (MT-Bench's single grading; ``parse_score`` reads it first)."""
    return ending_shape(rf"\[\[{integers(low, high)}\]\]", free_tokens(max_tokens), avoid="[")


def verdict_shape(max_tokens: int, letters: str = "ABC") -> Constraint:
    """Free reasoning, then ``[[A]]``, ``[[B]]`` or ``[[C]]`` (MT-Bench's pairwise verdict)."""
    return ending_shape(rf"\[\[[{letters}]\]\]", free_tokens(max_tokens), avoid="[")


def labelled_score_shape(label: str, low: int, high: int, max_tokens: int) -> Constraint:
    """A one-paragraph justification, then the line ``Label: k`` (Self-Rewarding's "Score: k")."""
    return ending_shape(rf"\n{label}: {integers(low, high)}", free_tokens(max_tokens), avoid="\n")


def json_shape(properties: dict[str, dict], required: list[str] | None = None) -> Constraint:
    """A JSON object of exactly ``properties`` (name -> JSON schema), all required unless named."""
    schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }
    return Constraint(json_schema=schema)


def free(max_tokens: int, cls: str = "[^\\n]", min_chars: int = 1) -> Part:
    return Part(free=cls, max_tokens=max(1, max_tokens), min_chars=min_chars)


def fitted(max_tokens: int, pieces: list) -> Constraint:
    """A shape of ``pieces`` that always fits in ``max_tokens``: ``Part`` objects stand as they are, and
    ``(character class, share, min_chars)`` free-text pieces split, by their shares, the tokens the fixed
    parts leave (a text part counted at a token per 2 characters plus one, a pattern at 8 tokens, 4 spare;
    forced text is tokenized canonically, SmolLM2's fixed parts take fewer)."""
    fixed = sum((len(p.text) // 2 + 1) if p.text is not None else 8 for p in pieces if isinstance(p, Part))
    room = max_tokens - fixed - 4
    parts = [p if isinstance(p, Part) else free(max(1, int(room * p[1])), p[0], p[2]) for p in pieces]
    return Constraint(parts=parts)


def line_shape(max_tokens: int) -> Constraint:
    """One line of text ("Write only the question", a one-line name or request)."""
    return Constraint(parts=[free(max_tokens - 1)])


def final_number_shape(max_tokens: int) -> Constraint:
    """Free working (no "#"), then GSM8K's final line "#### n": the last number is the answer."""
    return ending_shape(r"#### -?[0-9]{1,12}", free_tokens(max_tokens), avoid="#")


def problem_shape(max_tokens: int) -> Constraint:
    """A new math word problem, "Question: ..." on one line (starting with a letter or digit), then
    "Answer: <working> #### n"; question and answer share the budget."""
    return fitted(
        max_tokens,
        [
            Part(text="Question: "),
            Part(regex="[A-Za-z0-9]"),
            ("[^\\n#]", 0.5, 0),
            Part(text="\nAnswer: "),
            ("[^#]", 0.5, 1),
            Part(regex=r"#### -?[0-9]{1,12}"),
        ],
    )


def letter_shape(letters: str, max_tokens: int, reasoning: bool) -> Constraint:
    """An option letter on an "Answer: X" line: alone, or after one paragraph of reasoning."""
    final = rf"Answer: [{escape(letters)}]"
    if not reasoning:
        return Constraint(regex=final)
    return ending_shape(rf"\n{final}", free_tokens(max_tokens), avoid="\n")
