from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import CHAT, Sampling
from dataflywheel.ops.base import Mapper, ModelRef, OpParams


class Generate(Mapper):
    """Answer each conversation with a model: the reply becomes the final assistant turn, or a column.

    The prompt is the conversation without its final assistant turn, so prompt-only seeds gain a response
    and existing responses are regenerated (teacher data, baselines to judge against). Requests are greedy
    by default and go through the call cache; a request that fails after its retries leaves the row as it
    was and records the reason in ``error_generate``.
    """

    class Params(OpParams):
        model: str = ModelRef()
        output: str = Field("messages", description="messages (the final assistant turn) or a column name")
        system: str | None = Field(None, description="system prompt put before each conversation")
        max_tokens: int = Field(256, ge=1, description="new tokens at most")
        temperature: float = Field(0.0, ge=0, description="0 = greedy")
        top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
        seed: int | None = Field(None, description="sampling seed; the recipe's seed when unset")

    reads = (S.MESSAGES,)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}
    batch_rows = 64

    def output_columns(self) -> list[str]:
        out = ["error_generate"]
        return [S.MESSAGES, *out] if self.params.output == S.MESSAGES else [self.params.output, *out]

    def map(self, batch: pa.Table) -> pa.Table:
        p = self.params
        convs = batch.column(S.MESSAGES).to_pylist()
        prompts = [
            ([{"role": "system", "content": p.system}] if p.system else []) + S.prompt_of(c) for c in convs
        ]
        sampling = Sampling(
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            seed=p.seed if p.seed is not None else self.ctx.seed,
        )
        results = self.ctx.model(p.model).chat(prompts, sampling)
        errors = [r.error for r in results]
        if p.output == S.MESSAGES:
            new = [
                S.prompt_of(c) + [{"role": "assistant", "content": r.text}] if r.error is None else c
                for c, r in zip(convs, results, strict=True)
            ]
            batch = batch.set_column(
                batch.schema.get_field_index(S.MESSAGES), S.MESSAGES, pa.array(new, S.CONVERSATION_TYPE)
            )
        else:
            texts = pa.array([r.text if r.error is None else None for r in results], pa.string())
            i = batch.schema.get_field_index(p.output)
            batch = batch.set_column(i, p.output, texts) if i >= 0 else batch.append_column(p.output, texts)
        err = pa.array(errors, pa.string())
        i = batch.schema.get_field_index("error_generate")
        return (
            batch.set_column(i, "error_generate", err)
            if i >= 0
            else batch.append_column("error_generate", err)
        )
