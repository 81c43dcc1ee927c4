"""Verifiable answers: GSM8K final numbers and multiple-choice letters."""

from __future__ import annotations

import re

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
GSM_FINAL = re.compile(r"(?:####|\bA:|answer is|answer:)\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)
LETTER = re.compile(
    r"(?:answer(?: is)?|^)\s*[:\-]?\s*\(?([A-J])\)?(?:[.):\s]|$)", re.IGNORECASE | re.MULTILINE
)


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


def choice_letter(text: str | None, letters: str = "ABCD") -> str | None:
    """The chosen option letter: "Answer: B", "(C)", "D." or a bare letter on a line."""
    if not text:
        return None
    for m in LETTER.finditer(text.strip()):
        letter = m.group(1).upper()
        if letter in letters:
            return letter
    return None
