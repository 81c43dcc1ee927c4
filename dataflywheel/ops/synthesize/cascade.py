"""A cost-saving generation cascade (this project's design, from the survey's 3.5 "hybrid generation"):
a cheap local model drafts every answer, and only the rows that fail a cheap check go to the expensive
teacher.

* ``check: self_consistency``: the drafter answers greedily and samples ``samples`` more answers; the
  draft is kept when the share of samples whose final answer (``extract``: the last number, the last
  line, or the whole text, normalized) equals the draft's reaches ``min_agreement``;
* ``check: judge``: a judge model (default: the drafter) rates the draft 1-10 ("Rating: [[k]]", asked as
  free text closed by ``[[k]]`` where the judge can decode under a shape); the draft is kept from
  ``min_score`` on.

A row whose draft fails, whose check cannot be read (an unparsed rating is never a pass), or whose draft
request failed goes to the teacher. Writes the answer as the final assistant turn (or ``output``),
``cascade_source`` (drafter or teacher), ``cascade_check`` (the agreement or the rating) and
``error_cascade``; the step's stats count drafter and teacher calls, so the saving against asking the
teacher for every row is ``1 - teacher_calls / rows`` (the report's cost table prices each model).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.lib.answers import final_answer
from dataflywheel.models.base import CHAT, Sampling
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Mapper, ModelRef
from dataflywheel.ops.core.generate import put_answers
from dataflywheel.ops.llm import LLMParams, LLMTask, row_error, text_reply
from dataflywheel.ops.parsing import bracketed_score_shape, parse_score


class Cascade(LLMTask, Mapper):
    """Draft with a cheap model, check cheaply, send only the failures to the teacher."""

    class Params(LLMParams):
        model: str = ModelRef("the cheap drafting model")
        teacher: str = ModelRef("the expensive model asked for the rows that fail the check")
        check: Literal["self_consistency", "judge"] = Field("self_consistency", description="the cheap check")
        samples: int = Field(4, ge=1, description="self_consistency: sampled answers besides the draft")
        sample_temperature: float = Field(0.7, gt=0, description="self_consistency: their temperature")
        min_agreement: float = Field(0.75, ge=0, le=1, description="self_consistency: share that must agree")
        extract: Literal["last_number", "last_line", "text"] = Field(
            "last_number", description="self_consistency: what two answers must share"
        )
        judge: str | None = ModelRef("judge: the rating model (default: model)", None)
        min_score: float = Field(7.0, ge=1, le=10, description="judge: the lowest rating kept")
        teacher_max_tokens: int = Field(512, ge=1, description="tokens per teacher answer at most")
        output: str = Field("messages", description="messages (the final assistant turn) or a column name")

    reads = (S.MESSAGES,)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,), "teacher": (CHAT,), "judge": (CHAT,)}
    batch_rows = 32

    def output_columns(self) -> list[str]:
        out = [self.params.output] if self.params.output != S.MESSAGES else [S.MESSAGES]
        return [*out, "cascade_source", "cascade_check", "error_cascade"]

    def prompt(self, row: dict) -> list[dict]:
        return S.prompt_of(row[S.MESSAGES])

    def parse(self, reply: str, row: dict) -> dict:
        return {"text": reply.strip()}

    def map(self, batch: pa.Table) -> pa.Table:
        p = self.params
        rows = batch.to_pylist()
        convs = [self.prompt(r) for r in rows]
        drafts = self.ask_conversations(convs, text_reply, self.sampling())
        self.stats["drafter_calls"] += len(convs)
        checks: list[float | None] = [None] * len(rows)
        ok = [i for i, d in enumerate(drafts) if d.values]
        if p.check == "self_consistency":
            sampling = Sampling(
                temperature=p.sample_temperature, top_p=p.top_p, max_tokens=p.max_tokens, n=p.samples,
                seed=p.seed if p.seed is not None else self.ctx.seed,
            )  # fmt: skip
            samples = self.ask_conversations([convs[i] for i in ok], text_reply, sampling)
            self.stats["drafter_calls"] += len(ok)
            for i, s in zip(ok, samples, strict=True):
                want = final_answer(drafts[i].values[0]["text"], p.extract)
                got = [final_answer(v["text"], p.extract) for v in s.values]
                if want is not None and s.error is None and p.samples:
                    checks[i] = sum(g == want for g in got) / p.samples
        else:
            template = prompts.load(__file__, "cascade_judge.txt")
            asks = [
                [
                    {
                        "role": "user",
                        "content": prompts.fill(
                            template, question=S.prompt_text(convs[i]), answer=drafts[i].values[0]["text"]
                        ),
                    }
                ]
                for i in ok
            ]
            rating = self.shaped(Sampling(temperature=0.0, max_tokens=64), bracketed_score_shape(1, 10, 64))
            grades = self.ask_conversations(asks, _rating, rating, model=p.judge)
            self.stats["judge_calls"] += len(asks)
            for i, g in zip(ok, grades, strict=True):
                checks[i] = g.values[0]["rating"] if g.values else None
        threshold = p.min_agreement if p.check == "self_consistency" else p.min_score
        escalate = [i for i in range(len(rows)) if checks[i] is None or checks[i] < threshold]
        self.stats["check_unread"] += sum(checks[i] is None for i in ok)
        teacher = self.ask_conversations(
            [convs[i] for i in escalate],
            text_reply,
            Sampling(temperature=0.0, max_tokens=p.teacher_max_tokens),
            model=p.teacher,
        )
        self.stats["teacher_calls"] += len(escalate)
        answers: list[str | None] = [
            drafts[i].values[0]["text"] if drafts[i].values else None for i in range(len(rows))
        ]
        sources: list[str | None] = ["drafter"] * len(rows)
        errors: list[str | None] = [None] * len(rows)
        for i, reply in zip(escalate, teacher, strict=True):
            if reply.values:
                answers[i], sources[i] = reply.values[0]["text"], "teacher"
            else:
                answers[i], sources[i], errors[i] = None, None, row_error([reply])
        self.stats["kept_drafts"] += sum(s == "drafter" for s in sources)
        batch = put_answers(batch, rows, answers, p.output)
        batch = S.put_column(batch, "cascade_source", pa.array(sources, pa.string()))
        batch = S.put_column(batch, "cascade_check", pa.array(checks, pa.float64()))
        return S.put_column(batch, "error_cascade", pa.array(errors, pa.string()))


def _rating(text: str) -> dict | None:
    value = parse_score(text, 1, 10)
    return None if value is None else {"rating": value}
