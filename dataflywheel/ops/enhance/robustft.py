"""RobustFT (Luo et al., 2024): find the wrong labels of a multiple-choice set, repair those the model
is sure of.

Two ops, scoring kept apart from deciding:

``robustft_detect`` (a scorer) asks the model twice per row: directly ("Answer: <letter>"), and with
step-by-step reasoning and a check of it, recording that reply's entropy (the mean negative
log-probability of its tokens) in ``score_robustft_entropy_r``. A row is ``clean`` when both answers
agree with its label and ``noisy`` otherwise. An answer that names no option gives the label no
support, so it counts as a disagreement (the reference's check fails the same way) and is counted as
unparsed; a request that failed gives no evidence at all, so the row's tag stays null, ``error_robustft``
says why, and ``--retry-failed`` asks again.

``robustft_relabel`` (a selector: it needs the clean rows and the median over the noisy ones) repairs
each noisy row. Its ``k`` (3) nearest clean rows by question embedding are shown as solved examples and
the model answers again (context-enhanced, entropy H_c); a review turn sees the reasoned answer with its
reasoning and the context-enhanced answer, and names the final label. Relabeled rows whose H_c is below
the median H_c of the noisy rows (``keep_quantile``) are kept with the final label written into the
row: the last assistant turn becomes ``answer_template``, and ``answer_field`` gets the letter when
set. The other noisy rows are dropped with the reason; clean rows pass unchanged, as do untagged rows
(counted). ``robustft_label`` keeps the label each row came with.

The paper samples at temperature 1 (seeded here, so a rerun is served from the cache); its SFT set is
the clean rows and the kept relabeled rows, which is this selector's output.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.data.formats import MC_ANSWER
from dataflywheel.errors import FlywheelError
from dataflywheel.evaluate.tasks import choice_letter, final_choice
from dataflywheel.lib.diversity import nearest
from dataflywheel.models.base import CHAT, EMBED
from dataflywheel.models.constraint import Constraint
from dataflywheel.ops import prompts
from dataflywheel.ops.base import ModelRef, Scorer, Selection, Selector
from dataflywheel.ops.llm import LLMParams, LLMTask, Reply
from dataflywheel.ops.parsing import letter_shape

TAG = "tag_robustft"
LABEL = "robustft_label"
REASONED, REASONING = "robustft_reasoned", "robustft_reasoning"


def _prompt(name: str) -> str:
    return prompts.load(__file__, f"robustft_{name}.txt")


class RobustFTParams(LLMParams):
    temperature: float = Field(1.0, ge=0, description="sampling temperature (the paper: 1.0, seeded here)")
    max_tokens: int = Field(512, ge=1, description="tokens per reasoned answer at most")
    letters: str = Field("ABCD", pattern=r"^[A-J]{2,10}$", description="the option letters")
    answer_field: str | None = Field(
        None, description="column with each row's letter (default: the letter its last assistant turn names)"
    )


def given_label(row: dict, params: RobustFTParams) -> str | None:
    """The label a row came with: ``answer_field``'s letter, else the letter its answer names."""
    if params.answer_field:
        value = row.get(params.answer_field)
        letter = str(value).strip().upper() if value is not None else ""
        return letter if len(letter) == 1 and letter in params.letters else None
    answer = S.last_turn(row.get(S.MESSAGES) or [], "assistant")
    return choice_letter(answer, params.letters)


def _question(row: dict) -> str:
    return S.prompt_text(row.get(S.MESSAGES))


def _ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


class RobustFTDetect(LLMTask, Scorer):
    """RobustFT noise detection: clean when the direct and the reasoned answer both agree with the label."""

    class Params(RobustFTParams):
        direct_max_tokens: int = Field(16, ge=1, description="tokens per direct answer at most")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}
    batch_rows = 32

    def input_columns(self) -> list[str]:
        return [S.MESSAGES] + ([self.params.answer_field] if self.params.answer_field else [])

    def output_columns(self) -> list[str]:
        return [
            TAG,
            LABEL,
            "robustft_direct",
            REASONED,
            REASONING,
            "score_robustft_entropy_r",
            "error_robustft",
        ]

    def score(self, batch: pa.Table) -> dict:
        p = self.params
        rows = batch.to_pylist()
        labels = [given_label(r, p) for r in rows]
        asked = [i for i, (r, y) in enumerate(zip(rows, labels, strict=True)) if y and _question(r).strip()]
        base = self.sampling()
        direct = self.ask_conversations(
            [_ask(prompts.fill(_prompt("direct"), question=_question(rows[i]))) for i in asked],
            _reader(p.letters),
            self.shaped(
                base.model_copy(update={"max_tokens": p.direct_max_tokens}),
                letter_shape(p.letters, p.direct_max_tokens, reasoning=False),
            ),
        )
        reasoned = self.ask_conversations(
            [_ask(prompts.fill(_prompt("reason"), question=_question(rows[i]))) for i in asked],
            _reader(p.letters),
            self.shaped(base.model_copy(update={"logprobs": True}), _reasoned(self.params)),
        )
        n = len(rows)
        tag, d_out, r_out, why, entropy = [None] * n, [None] * n, [None] * n, [None] * n, [None] * n
        reasoning: list[str | None] = [None] * n
        for i in range(n):
            if labels[i] is None:
                why[i] = f"no label: expected a letter of {p.letters}"
                self.stats["no_label"] += 1
        for i, d, r in zip(asked, direct, reasoned, strict=True):
            if d.error is not None or r.error is not None:
                why[i] = f"request failed: {d.error or r.error}"
                continue
            d_out[i], r_out[i] = _first(d), _first(r)
            reasoning[i] = r.texts[0] if r.texts else None
            entropy[i] = r.mean_nll(0)
            tag[i] = "clean" if d_out[i] == labels[i] and r_out[i] == labels[i] else "noisy"
            self.stats[tag[i]] += 1
        return {
            TAG: pa.array(tag, pa.string()),
            LABEL: pa.array(labels, pa.string()),
            "robustft_direct": pa.array(d_out, pa.string()),
            REASONED: pa.array(r_out, pa.string()),
            REASONING: pa.array(reasoning, pa.string()),
            "score_robustft_entropy_r": pa.array(entropy, pa.float64()),
            "error_robustft": pa.array(why, pa.string()),
        }


def _reasoned(p) -> Constraint:
    """Reasoning, then the "Answer: <letter>" line every reasoning prompt asks to finish with."""
    return letter_shape(p.letters, p.max_tokens, reasoning=True)


def _reader(letters: str):
    """Reads the option letter a reply ends on, as ``{"letter": X}`` (None: it names none)."""

    def read(text: str) -> dict | None:
        letter = final_choice(text, letters)
        return None if letter is None else {"letter": letter}

    return read


def _first(reply: Reply) -> str | None:
    got = reply.parsed[0] if reply.parsed else None
    return None if got is None else got["letter"]


def context_prompt(question: str, examples: list[tuple[str, str]]) -> str:
    """The context-enhanced question: solved neighbours (question, letter) first."""
    shown = "\n\n".join(f"Question:\n{q}\nAnswer: {a}" for q, a in examples)
    return prompts.fill(_prompt("context"), examples=shown, question=question)


def review_prompt(question: str, reasoning: str | None, reasoned: str | None, context: str) -> str:
    return prompts.fill(
        _prompt("review"),
        question=question,
        reasoning=(reasoning or "(no reasoning)").strip(),
        reasoned=reasoned or "(it named no option)",
        context=context,
    )


class RobustFTRelabel(LLMTask, Selector):
    """RobustFT relabeling: context-enhanced answers from the k nearest clean rows, a review, and the
    relabeled rows below the median entropy kept."""

    class Params(RobustFTParams):
        embedder: str = ModelRef("embeds questions to find each noisy row's nearest clean rows")
        k: int = Field(3, ge=1, description="clean rows shown as solved examples")
        keep_quantile: float = Field(
            0.5, gt=0, le=1, description="keep relabeled rows with entropy below this quantile (median)"
        )
        review: bool = Field(
            True, description="a review turn names the final label (else the context answer)"
        )
        answer_template: str = Field(MC_ANSWER, description="a relabeled row's answer; {letter} is the label")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,), "embedder": (EMBED,)}

    def input_columns(self) -> list[str]:
        cols = [S.MESSAGES, TAG, LABEL, REASONED, REASONING]
        return cols + ([self.params.answer_field] if self.params.answer_field else [])

    def output_columns(self) -> list[str]:
        extra = [self.params.answer_field] if self.params.answer_field else []
        return [
            S.MESSAGES,
            *extra,
            "robustft_context",
            "robustft_final",
            "score_robustft_entropy",
            "robustft_relabeled",
        ]

    def select(self, table: pa.Table) -> Selection:
        p = self.params
        rows = table.to_pylist()
        n = len(rows)
        clean = [i for i, r in enumerate(rows) if r[TAG] == "clean"]
        noisy = [i for i, r in enumerate(rows) if r[TAG] == "noisy"]
        self.stats.update(clean=len(clean), noisy=len(noisy), untagged=n - len(clean) - len(noisy))
        context: list[str | None] = [None] * n
        final: list[str | None] = [None] * n
        entropy: list[float | None] = [None] * n
        reasons: dict[int, str] = {}
        details: dict[int, str] = {}
        if noisy and not clean:
            raise FlywheelError(
                f"step {self.ctx.step} ({self.name}): no row was tagged clean, so there is nothing to "
                "show as solved examples; check robustft_detect's answers (error_robustft, raw replies)"
            )
        if noisy:
            questions = [_question(r) for r in rows]
            vecs = np.asarray(self.ctx.model(p.embedder).embed([questions[i] for i in clean + noisy]))
            near = nearest(vecs[: len(clean)], vecs[len(clean) :], p.k)
            convs = [
                _ask(
                    context_prompt(questions[i], [(questions[clean[j]], rows[clean[j]][LABEL]) for j in hits])
                )
                for i, hits in zip(noisy, near, strict=True)
            ]
            read = _reader(p.letters)
            replies = self.ask_conversations(
                convs,
                read,
                self.shaped(self.sampling().model_copy(update={"logprobs": True}), _reasoned(self.params)),
            )
            for i, reply in zip(noisy, replies, strict=True):
                if reply.error is not None:
                    reasons[i], details[i] = "robustft: request failed", reply.error
                    continue
                entropy[i], context[i] = reply.mean_nll(0), _first(reply)
                if context[i] is None:
                    reasons[i], details[i] = "robustft: relabel names no option", reply.texts[0][:200]
            answered = [i for i in noisy if context[i] is not None]
            if p.review:
                reviews = self.ask_conversations(
                    [
                        _ask(review_prompt(questions[i], rows[i][REASONING], rows[i][REASONED], context[i]))
                        for i in answered
                    ],
                    read,
                    self.shaped(self.sampling(), _reasoned(self.params)),
                )
                for i, reply in zip(answered, reviews, strict=True):
                    final[i] = _first(reply) if reply.error is None else None
                    if final[i] is None:
                        reasons[i] = (
                            "robustft: review request failed"
                            if reply.error
                            else "robustft: review names no option"
                        )
                        details[i] = reply.error or reply.texts[0][:200]
            else:
                for i in answered:
                    final[i] = context[i]
            measured = [entropy[i] for i in noisy if entropy[i] is not None]
            threshold = float(np.quantile(measured, p.keep_quantile)) if measured else float("nan")
            self.stats["threshold"] = round(threshold, 6) if measured else None
            for i in noisy:
                if i in reasons:
                    continue
                if entropy[i] is None:
                    reasons[i], details[i] = "robustft: no log-probabilities", "the backend returned none"
                elif not entropy[i] < threshold:
                    reasons[i] = "robustft: relabel entropy not below the median"
                    details[i] = f"H_c {entropy[i]:.4f} >= {threshold:.4f}"
        keep = [i for i in range(n) if i not in reasons]
        relabeled = [i in noisy and i not in reasons for i in range(n)]
        messages = [r[S.MESSAGES] for r in rows]
        for i in (i for i in range(n) if relabeled[i]):
            answer = {"role": "assistant", "content": p.answer_template.replace("{letter}", final[i])}
            conv = list(messages[i])
            messages[i] = (
                conv[:-1] + [answer] if conv and conv[-1]["role"] == "assistant" else conv + [answer]
            )
            self.stats["relabeled"] += 1
            self.stats["changed"] += final[i] != rows[i][LABEL]
        for reason in reasons.values():
            self.stats[reason.removeprefix("robustft: ")] += 1
        columns = {
            S.MESSAGES: pa.array(messages, S.CONVERSATION_TYPE),
            "robustft_context": pa.array(context, pa.string()),
            "robustft_final": pa.array(final, pa.string()),
            "score_robustft_entropy": pa.array(entropy, pa.float64()),
            "robustft_relabeled": pa.array(relabeled, pa.bool_()),
        }
        if p.answer_field:
            columns[p.answer_field] = pa.array(
                [final[i] if relabeled[i] else rows[i].get(p.answer_field) for i in range(n)], pa.string()
            )
        return Selection(
            np.asarray(keep, dtype=np.int64), reasons, details, columns, stats={"counts": dict(self.stats)}
        )
