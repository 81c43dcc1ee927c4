from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import CHAT, LOGPROBS
from dataflywheel.models.constraint import Constraint
from dataflywheel.ops import prompts
from dataflywheel.ops.llm import LLMParams, LLMScorer
from dataflywheel.ops.parsing import expected_score, free_chars, parse_score

OPTIONS = [str(k) for k in range(6)]


class AlpaGasusScorer(LLMScorer):
    """AlpaGasus (Chen et al., ICLR 2024): an LLM grades each (instruction, response) from 0 to 5.

    The grader gets the pair and a rating request (``dimension``: accuracy, as in the paper, or
    helpfulness) and answers greedily (temperature 0, top_p 1, 256 tokens); the score is read from the
    first line, "Score: k" or a fraction. A reply without a score in 0-5 leaves ``score_<name>`` null
    and says why in ``error_<name>`` (the reply is kept in ``raw_<name>``): never guessed.
    ``mode: expected`` is the small-model variant: the expected score under the grader's next-token
    distribution over "0".."5". Select with ``filter: {column: score_alpagasus, min: 4.5}`` (the paper's
    threshold).
    """

    class Params(LLMParams):
        dimension: Literal["accuracy", "helpfulness"] = Field("accuracy", description="what the grader rates")
        mode: Literal["generate", "expected"] = Field(
            "generate", description="parse the reply, or expected score"
        )
        name: str = Field("alpagasus", pattern=r"^[A-Za-z0-9_]+$", description="column name: score_<name>")

    def model_needs(self) -> dict[str, tuple[str, ...]]:
        return {"model": (LOGPROBS,) if self.params.mode == "expected" else (CHAT,)}

    def value_columns(self) -> dict[str, pa.DataType]:
        return {f"score_{self.column_name}": pa.float64()}

    def prompt(self, row: dict) -> list[dict]:
        conv = row[S.MESSAGES]
        system = prompts.load(__file__, "alpagasus_system.txt").strip()
        template = prompts.load(__file__, f"alpagasus_{self.params.dimension}.txt")
        instruction = S.prompt_text(conv)
        text = prompts.fill(template, instruction=instruction, response=S.last_turn(conv, "assistant") or "")
        return [{"role": "system", "content": system}, {"role": "user", "content": text}]

    def shape(self) -> Constraint | None:
        """The score alone on the first line (0-5, halves allowed), then the free explanation."""
        if self.params.mode != "generate":
            return None
        room = free_chars(self.params.max_tokens)
        return Constraint(regex=rf"[0-5](\.5)?(\n[\s\S]{{0,{room}}})?")

    def parse(self, reply: str, row: dict) -> dict | None:
        value = parse_score(reply, 0, 5)
        return None if value is None else {f"score_{self.column_name}": value}

    def score(self, batch: pa.Table) -> dict:
        if self.params.mode == "generate":
            return super().score(batch)
        rows = batch.to_pylist()
        scores = [expected_score(lps, range(6)) for (lps,) in self.ask_options(rows, OPTIONS)]
        self.stats["unparsed"] += scores.count(None)
        n = len(rows)
        errors = [None if s is not None else "no finite log-probability for any score token" for s in scores]
        return {
            f"score_{self.column_name}": pa.array(scores, pa.float64()),
            f"error_{self.column_name}": pa.array(errors, pa.string()),
            f"raw_{self.column_name}": pa.nulls(n, pa.list_(pa.string())),
        }
