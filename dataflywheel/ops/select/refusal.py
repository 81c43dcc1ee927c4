from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field

from dataflywheel.lib.text import Aggregate
from dataflywheel.ops.select.signals import SignalParams, SignalScorer

# Phrasings of canned refusals and disclaimers (written for this project).
PATTERNS = [
    r"\bas an? (ai|artificial intelligence)( language model| assistant| model)?\b",
    r"\bi('m| am) (just |only )?an? (ai|language model|virtual assistant)\b",
    r"\bi (cannot|can't|can not|am unable to|'m unable to|am not able to|'m not able to) "
    r"(help|assist|provide|fulfill|comply|do that|answer|write|create|generate|recommend|give)",
    r"\bi('m| am) sorry,? but i (cannot|can't|won't|am unable)",
    r"\bi (do not|don't) have (personal )?(opinions|feelings|preferences|beliefs|experiences)\b",
    r"\bit (is|would be) (not appropriate|inappropriate) for me\b",
    r"\bi must (decline|refuse)\b",
]


class Refusal(SignalScorer):
    """``score_<field>_refusal``: 1.0 when the text contains a canned refusal or AI disclaimer
    ("As an AI language model, I cannot ..."), else 0.0. Multi-turn: the largest value over the turns."""

    class Params(SignalParams):
        aggregate: Aggregate = Field(
            "max", description="how the turns combine (max: any refusing turn counts)"
        )
        extra_patterns: list[str] = Field([], description="more regular expressions (case-insensitive)")

    signals: ClassVar[tuple[str, ...]] = ("refusal",)

    def setup(self) -> None:
        self._re = re.compile("|".join(PATTERNS + list(self.params.extra_patterns)), re.IGNORECASE)

    def measure(self, text: str, context: dict) -> dict[str, float]:
        return {"refusal": 1.0 if self._re.search(text) else 0.0}
