from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from dataflywheel.lib.tokens import load_tokenizer
from dataflywheel.ops.select.signals import SignalParams, SignalScorer


class TokenLength(SignalScorer):
    """Length in tokens of a named tokenizer (what a training budget or a context window is counted in).

    ``tokenizer`` is anything ``transformers.AutoTokenizer`` loads: a local folder, a hub name, or
    ``embedded:smollm2-135m-instruct``. Writes ``score_<field>_tokens``.
    """

    class Params(SignalParams):
        tokenizer: str = Field("embedded:smollm2-135m-instruct", description="tokenizer to count with")

    signals: ClassVar[tuple[str, ...]] = ("tokens",)

    def setup(self) -> None:
        self._tok = load_tokenizer(self.params.tokenizer)

    def measure(self, text: str, context: dict) -> dict[str, float]:
        return {"tokens": float(len(self._tok(text, add_special_tokens=False)["input_ids"]))}
