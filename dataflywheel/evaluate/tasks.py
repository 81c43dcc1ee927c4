"""Verifiable answers: GSM8K final numbers and multiple-choice letters."""

from __future__ import annotations

import re

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
GSM_FINAL = re.compile(r"(?:####|\bA:|answer is|answer:)\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)
# Generated multiple-choice answers, read as lm-evaluation-harness's MultiChoiceRegexFilter does (an
# explicit "the answer is (C)", an option's text, a letter after a colon), with a line opening on a letter
# ("A. Paris") taken before the option texts: that is how small chat models answer (see the tests).
STATED = re.compile(
    r"\b(?:answer|option|choice)\s*(?:is|would be|:|=)\s*(?:option\s*|choice\s*)?[:\s]*"
    r"\(?((?-i:[A-J]))\)?(?![\w'])",
    re.IGNORECASE,
)
AFTER_COLON = re.compile(r":\s*\(?([A-J])(?:\)|[.,](?:\s|$)|\s*$)", re.MULTILINE)
LONE = re.compile(r"^\s*[\(\[]?([A-J])(?:[\)\]]|[.:](?:\s|$)|\s*$)", re.MULTILINE)


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def gsm8k_answer(text: str | None) -> float | None:
    """The final number of a GSM8K-style solution: after "####" / "A:" / "the answer is", else the last
    number in the text."""
    if not text:
        return None
    marked = GSM_FINAL.findall(text)
    if marked:
        return _number(marked[-1])
    numbers = NUMBER.findall(text)
    return _number(numbers[-1]) if numbers else None


def gsm8k_correct(prediction: str | None, reference: str) -> bool:
    want, got = gsm8k_answer(reference), gsm8k_answer(prediction)
    return want is not None and got is not None and abs(want - got) < 1e-6


def choice_letter(text: str | None, letters: str = "ABCD", options: list[str] | None = None) -> str | None:
    """The chosen option letter, or None when the text names none (recorded as unparsed, never guessed).

    Tried in order: a stated answer ("The answer is (B)", "The correct option is C.", "Answer: D"); a
    letter opening a line as an answer does ("C", "(C) because", "D. Paris": how small chat models
    answer); the text of exactly one of ``options`` appearing in the reply; a letter right after a
    colon. A sentence that merely starts with the word "A" is not an answer.
    """
    if not text or not text.strip():
        return None
    for m in STATED.finditer(text):
        if m.group(1).upper() in letters:
            return m.group(1).upper()
    for m in LONE.finditer(text):
        if m.group(1) in letters:
            return m.group(1)
    if options:
        low = text.lower()
        found = {
            letters[i]
            for i, o in enumerate(options[: len(letters)])
            if o.strip() and o.strip().lower() in low
        }
        if len(found) == 1:
            return found.pop()
    for m in AFTER_COLON.finditer(text):
        if m.group(1) in letters:
            return m.group(1)
    return None


ANSWER_LINE = re.compile(r"\banswer\s*(?:is)?\s*[:=]?\s*\(?((?-i:[A-J]))\)?(?![\w'])", re.IGNORECASE)


def final_choice(text: str | None, letters: str = "ABCD") -> str | None:
    """The letter a reasoned reply ends on: its last "Answer: X" (or "answer is X"), else
    ``choice_letter``'s reading. Reasoning names options on the way ("A is wrong"); the conclusion
    comes last."""
    if not text:
        return None
    found = [m.group(1) for m in ANSWER_LINE.finditer(text) if m.group(1) in letters]
    return found[-1] if found else choice_letter(text, letters)
