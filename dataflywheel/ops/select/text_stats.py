from __future__ import annotations

import re
from collections import Counter
from typing import ClassVar

from pydantic import Field

from dataflywheel.ops.select.signals import SignalParams, SignalScorer

WORD = re.compile(r"\w+", re.UNICODE)
# Common English function words (written for this project; extend with `stopwords:` in a recipe).
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has
have having he her here hers herself him himself his how i if in into is it its itself just me more most my
myself no nor not now of off on once only or other our ours ourselves out over own same she should so some
such than that the their theirs them themselves then there these they this those through to too under until
up very was we were what when where which while who whom why will with would you your yours yourself
yourselves""".split()
)


def ngram_repetition(items: list[str] | str, n: int) -> float:
    """Share of n-grams that occur more than once (Data-Juicer's word/char repetition ratio). A string's
    n-grams are its substrings (slicing a str is far cheaper than building tuples of characters)."""
    if isinstance(items, str):
        grams = [items[i : i + n] for i in range(len(items) - n + 1)]
    else:
        grams = [tuple(items[i : i + n]) for i in range(len(items) - n + 1)]
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c for c in counts.values() if c > 1) / len(grams)


class TextStats(SignalScorer):
    """Length and composition signals: characters, words, word and character n-gram repetition, the shares
    of special (neither alphanumeric nor space) and of alphanumeric characters, and the stopword ratio.

    The cheap filters every curation pipeline starts with (Gopher, RedPajama, Data-Juicer): very short,
    very repetitive or symbol-heavy text is rarely worth training on; natural prose has a stopword ratio
    of about 0.3-0.5 and code or word salad much less. Writes ``score_<field>_<signal>``.
    """

    class Params(SignalParams):
        word_ngram: int = Field(3, ge=1, description="n of the word n-gram repetition ratio")
        char_ngram: int = Field(10, ge=1, description="n of the character n-gram repetition ratio")

    signals: ClassVar[tuple[str, ...]] = (
        "chars",
        "words",
        "word_rep",
        "char_rep",
        "special_ratio",
        "alnum_ratio",
        "stopword_ratio",
    )

    def measure(self, text: str, context: dict) -> dict[str, float]:
        words = WORD.findall(text.lower())
        chars = len(text)
        alnum = sum(map(str.isalnum, text))  # no character is both alphanumeric and space
        special = chars - alnum - sum(map(str.isspace, text))
        return {
            "chars": float(chars),
            "words": float(len(words)),
            "word_rep": ngram_repetition(words, self.params.word_ngram),
            "char_rep": ngram_repetition(text, self.params.char_ngram),
            "special_ratio": special / chars if chars else 0.0,
            "alnum_ratio": alnum / chars if chars else 0.0,
            "stopword_ratio": sum(map(STOPWORDS.__contains__, words)) / len(words) if words else 0.0,
        }
