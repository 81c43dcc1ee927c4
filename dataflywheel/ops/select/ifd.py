from __future__ import annotations

from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.lib.text import AGGREGATES
from dataflywheel.models.base import LOGPROBS
from dataflywheel.ops import prompts
from dataflywheel.ops.base import ModelRef, OpParams, Scorer

DIRECT_HEADER = "### Response:\n"


class IFDScorer(Scorer):
    """Instruction-Following Difficulty (Cherry LLM; Li et al., NAACL 2024).

    IFD(Q, A) = s(A|Q) / s(A): the answer's mean token loss given the instruction over its mean loss with
    no instruction. Near 1, the instruction barely helps the model produce the answer (hard, valuable);
    above 1 the instruction misleads (the paper drops those). Both losses come from the backend's
    batched response-only log-probabilities. With the chat template (default) the direct score keeps
    only the assistant header before the answer; ``template: alpaca`` scores raw text with "### ..."
    headers as the paper's code does. Multi-turn: each assistant turn with its context, aggregated.
    Writes ``score_ifd``, ``score_ifd_cond_nll`` and ``score_ifd_direct_nll``; a turn that does not fit
    the model's context is skipped, as in the paper.
    """

    class Params(OpParams):
        model: str = ModelRef()
        template: Literal["chat", "alpaca"] = Field(
            "chat", description="chat template, or Alpaca-style raw text"
        )
        aggregate: Literal["mean", "min", "max", "last"] = Field("mean", description="how turns combine")

    reads = (S.MESSAGES,)
    writes = ("score_ifd", "score_ifd_cond_nll", "score_ifd_direct_nll")
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (LOGPROBS,)}
    batch_rows = 64

    def score(self, batch: pa.Table) -> dict:
        items = []  # (row, context, response) for every assistant turn
        for r, conv in enumerate(batch.column(S.MESSAGES).to_pylist()):
            for t, m in enumerate(conv):
                if m["role"] == "assistant" and m["content"].strip():
                    items.append((r, conv[:t], m["content"]))
        model = self.ctx.model(self.params.model)
        responses = [i[2] for i in items]
        n = len(items)
        # Both passes in one call: the backend sorts all 2n sequences by length into shared batches.
        if self.params.template == "chat":
            both = model.logprobs([i[1] for i in items] + [[] for _ in items], responses + responses)
        else:
            template = prompts.load(__file__, "ifd_alpaca.txt")
            prefixes = [prompts.fill(template, instruction=_alpaca_instruction(i[1])) for i in items]
            both = model.text_logprobs(prefixes + [DIRECT_HEADER] * n, responses + responses)
        cond, direct = both[:n], both[n:]
        per_row: dict[int, list[tuple[float, float]]] = {}
        for (r, _, _), c, d in zip(items, cond, direct, strict=True):
            if c.mean_nll is not None and d.mean_nll:
                per_row.setdefault(r, []).append((c.mean_nll, d.mean_nll))
        agg = AGGREGATES[self.params.aggregate]
        out = {name: [] for name in self.writes}
        for r in range(batch.num_rows):
            turns = per_row.get(r)
            out["score_ifd"].append(agg([c / d for c, d in turns]) if turns else None)
            out["score_ifd_cond_nll"].append(agg([c for c, _ in turns]) if turns else None)
            out["score_ifd_direct_nll"].append(agg([d for _, d in turns]) if turns else None)
        return out


def _alpaca_instruction(context: list[dict]) -> str:
    """The last user turn, after any earlier turns (which become part of the instruction)."""
    parts = [f"{m['role']}: {m['content']}" for m in context[:-1] if m["role"] != "system"]
    last = context[-1]["content"] if context else ""
    return "\n".join([*parts, last]) if parts else last
