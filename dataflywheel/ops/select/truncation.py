from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field

from dataflywheel.lib.text import Aggregate
from dataflywheel.ops.select.signals import SignalParams, SignalScorer

CLOSERS = tuple(".!?…\"'”’)]}>`*;") + ("。", "！", "？")
DANGLING = frozenset(
    "a an the and or but of to in on for with which that who because as if so by from at is "
    "are was were be this these their its your our".split()
)
LIST_ITEM = re.compile(r"(^|\n)\s*(\d+[.)]|[-*•])\s*$")
CODE = re.compile(r"```|^\s{4,}\S|^\s*(def|class|import|return|for|if|while|SELECT|function)\b", re.MULTILINE)


def is_truncated(text: str, min_words: int = 8) -> bool:
    """A response that stops mid-sentence or mid-list."""
    t = text.rstrip()
    if not t:
        return True
    if LIST_ITEM.search(t) or t.endswith((":", ",", "-", "(", "—")):
        return True  # an empty list item, or a sentence that announces more than it gives
    if t.endswith(CLOSERS) or (t[-1] in "0123456789" and len(t.split()) < min_words):
        return False
    last = re.findall(r"\w+", t.lower())[-1:] or [""]
    if last[0] in DANGLING:
        return True
    if CODE.search(t):
        return False  # code ends on identifiers, not punctuation
    line = t.rsplit("\n", 1)[-1].strip()
    if re.match(r"(\d+[.)]|[-*•])\s+\S", line):
        return False  # a list item with content needs no full stop
    return len(line.split()) >= min_words and t[-1].isalnum()


class Truncation(SignalScorer):
    """``score_<field>_truncated``: 1.0 when a response stops mid-sentence or mid-list (no closing
    punctuation after a long sentence, a dangling article or conjunction, an empty list item, a trailing
    colon or comma), else 0.0. Short answers ("Paris") and code are not flagged. Multi-turn: any turn."""

    class Params(SignalParams):
        aggregate: Aggregate = Field(
            "max", description="how the turns combine (max: any truncated turn counts)"
        )
        min_words: int = Field(8, ge=1, description="texts shorter than this may end without punctuation")

    signals: ClassVar[tuple[str, ...]] = ("truncated",)

    def measure(self, text: str, context: dict) -> dict[str, float]:
        return {"truncated": 1.0 if is_truncated(text, self.params.min_words) else 0.0}
