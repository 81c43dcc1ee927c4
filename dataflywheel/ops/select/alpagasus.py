from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import CHAT, LOGPROBS, Sampling
from dataflywheel.ops import prompts
from dataflywheel.ops.base import ModelRef, OpParams, Scorer
from dataflywheel.ops.parsing import parse_score


class AlpaGasusScorer(Scorer):
    """AlpaGasus (Chen et al., ICLR 2024): an LLM grades each (instruction, response) from 0 to 5.

    The grader gets the pair and a rating request (``dimension``: accuracy, as in the paper, or
    helpfulness) and answers greedily (temperature 0, top_p 1, 256 tokens); the score is read from the
    first line, "Score: k" or a fraction. A reply without a score in 0-5 leaves ``score_<name>`` null
    and keeps the reply in ``error_<name>``: never guessed. ``mode: expected`` is the small-model
    variant: the expected score under the grader's next-token distribution over "0".."5".
    Select with ``filter: {column: score_alpagasus, min: 4.5}`` (the paper's threshold).
    """

    class Params(OpParams):
        model: str = ModelRef()
        dimension: Literal["accuracy", "helpfulness"] = Field("accuracy", description="what the grader rates")
        mode: Literal["generate", "expected"] = Field(
            "generate", description="parse the reply, or expected score"
        )
        name: str = Field("alpagasus", pattern=r"^[A-Za-z0-9_]+$", description="column name: score_<name>")
        max_tokens: int = Field(256, ge=1, description="grader reply length (generate mode)")

    reads = (S.MESSAGES,)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}
    batch_rows = 32
    options = tuple(str(k) for k in range(6))

    def model_needs(self) -> dict[str, tuple[str, ...]]:
        return {"model": (LOGPROBS,) if self.params.mode == "expected" else (CHAT,)}

    def output_columns(self) -> list[str]:
        return [f"score_{self.params.name}", f"error_{self.params.name}"]

    def prompts(self, convs: list[list[dict]]) -> list[list[dict]]:
        p = self.params
        system = prompts.load(__file__, "alpagasus_system.txt").strip()
        template = prompts.load(__file__, f"alpagasus_{p.dimension}.txt")
        out = []
        for conv in convs:
            instruction = "\n\n".join(m["content"] for m in S.prompt_of(conv) if m["role"] != "system")
            text = prompts.fill(
                template, instruction=instruction, response=S.last_turn(conv, "assistant") or ""
            )
            out.append([{"role": "system", "content": system}, {"role": "user", "content": text}])
        return out

    def score(self, batch: pa.Table) -> dict:
        p = self.params
        model = self.ctx.model(p.model)
        asks = self.prompts(batch.column(S.MESSAGES).to_pylist())
        scores, errors = [], []
        if p.mode == "expected":
            for lps in model.option_logprobs(asks, list(self.options)):
                probs = np.exp(np.asarray(lps) - np.max(lps))
                scores.append(float(np.dot(probs / probs.sum(), np.arange(6))))
                errors.append(None)
        else:
            for r in model.chat(asks, Sampling(temperature=0.0, top_p=1.0, max_tokens=p.max_tokens)):
                if r.error is not None:
                    scores.append(None)
                    errors.append(f"request failed: {r.error}")
                    continue
                value = parse_score(r.text, 0, 5)
                scores.append(value)
                errors.append(None if value is not None else f"unparsed reply: {r.text[:200]!r}")
        return {
            f"score_{p.name}": pa.array(scores, pa.float64()),
            f"error_{p.name}": pa.array(errors, pa.string()),
        }
