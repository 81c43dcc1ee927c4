"""Self-Refine (Madaan et al., NeurIPS 2023): the model critiques its response and rewrites it, until the
feedback says it is done.

``self_refine`` (a mapper) works on every row's last answer: the row's own assistant turn (refining a
dataset's responses), or with ``draft: generate`` one the model writes first (greedy). Then, at most
``max_rounds`` times: the model gives feedback on the current response (specific, actionable, each of
``aspects`` scored 1-5 and a "Total score: k/N" line); the loop stops when the feedback ends with the
stop phrase or the total reaches ``threshold`` (default: the maximum); otherwise the model writes a new
response from a prompt holding the whole history (every earlier response and its feedback), as the
paper's refine step does. The last response gets its feedback too, so every response has a score.

The row's answer becomes the best-scored response (the last one when no feedback could be scored: a
feedback without a readable total is counted as unparsed and never scores 0). Every row keeps its
responses (``refine_drafts``) and feedback (``refine_feedback``), the chosen one's total in
``score_refine`` (a fraction of the maximum), and why it stopped in ``refine_stop``
(stop_phrase, threshold, max_rounds, failed).
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import CHAT
from dataflywheel.models.constraint import Constraint, Part, escape
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Mapper
from dataflywheel.ops.llm import LLMParams, LLMTask, text_reply
from dataflywheel.ops.parsing import fitted

_TOTAL = re.compile(r"total\s*score\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)\s*/\s*(\d+)", re.IGNORECASE)
ASPECTS = ("correctness", "completeness", "clarity", "helpfulness", "concision")


def total_score(feedback: str, maximum: int) -> float | None:
    """The feedback's last "Total score: k/N" as k, when N is the expected maximum and k within it."""
    found = _TOTAL.findall(feedback or "")
    if not found:
        return None
    k, n = float(found[-1][0]), int(found[-1][1])
    return k if n == maximum and 0 <= k <= maximum else None


def history_text(drafts: list[str], feedback: list[str]) -> str:
    parts = []
    for i, (d, f) in enumerate(zip(drafts, feedback, strict=False), 1):
        parts.append(f"Response {i}:\n{d}\n\nFeedback on response {i}:\n{f}")
    return "\n\n".join(parts)


class SelfRefine(LLMTask, Mapper):
    """Self-Refine: feedback, then a rewrite from the whole history, until the feedback says stop; the
    best-scored response becomes the row's answer."""

    class Params(LLMParams):
        max_rounds: int = Field(4, ge=1, description="rewrites at most (the paper: 4)")
        aspects: list[str] = Field(
            list(ASPECTS), min_length=1, description="what the feedback scores, 1-5 each"
        )
        stop: str = Field("No further changes.", min_length=1, description="the feedback's stop phrase")
        threshold: float | None = Field(None, description="stop at this total (default: the maximum)")
        draft: Literal["existing", "generate"] = Field(
            "existing", description="refine the row's answer, or one the model writes first"
        )
        max_tokens: int = Field(512, ge=1, description="tokens per response or feedback at most")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}
    reads = (S.MESSAGES,)
    writes = (S.MESSAGES, "refine_drafts", "refine_feedback", "score_refine", "refine_stop", "error_refine")
    batch_rows = 16

    def map(self, batch: pa.Table) -> pa.Table:
        p = self.params
        total = 5 * len(p.aspects)
        threshold = total if p.threshold is None else p.threshold
        convs = batch.column(S.MESSAGES).to_pylist()
        n = len(convs)
        requests = [S.prompt_text(c) for c in convs]
        drafts: list[list[str]] = [[] for _ in range(n)]
        notes: list[list[str]] = [[] for _ in range(n)]
        scores: list[list[float | None]] = [[] for _ in range(n)]
        stop: list[str | None] = [None] * n
        errors: list[str | None] = [None] * n
        # y_0: the row's own answer, or the model's (greedy)
        if p.draft == "existing":
            for i, c in enumerate(convs):
                if c and c[-1]["role"] == "assistant" and c[-1]["content"].strip():
                    drafts[i].append(c[-1]["content"])
                else:
                    stop[i], errors[i] = "failed", "no answer to refine (draft: existing)"
        else:
            asked = [i for i in range(n) if requests[i].strip()]
            prompt_turns = [[m for m in S.prompt_of(convs[i])] for i in asked]
            for i, reply in zip(asked, self.ask_conversations(prompt_turns, text_reply), strict=True):
                if reply.values:
                    drafts[i].append(reply.values[0]["text"])
                else:
                    stop[i], errors[i] = "failed", reply.error or "the first draft is empty"
        active = [i for i in range(n) if stop[i] is None and drafts[i]]
        for rnd in range(p.max_rounds + 1):
            if not active:
                break
            feedback = self.ask_conversations(
                [self._feedback_prompt(requests[i], drafts[i][-1], total) for i in active],
                text_reply,
                self.shaped(self.sampling(), self.feedback_shape(total)),
            )
            going = []
            for i, reply in zip(active, feedback, strict=True):
                if not reply.values:
                    stop[i], errors[i] = "failed", reply.error or "empty feedback"
                    continue
                text = reply.values[0]["text"]
                notes[i].append(text)
                score = total_score(text, total)
                self.stats["feedback_unscored"] += score is None
                scores[i].append(score)
                if p.stop.lower() in text.lower():
                    stop[i] = "stop_phrase"
                elif score is not None and score >= threshold:
                    stop[i] = "threshold"
                elif rnd == p.max_rounds:
                    stop[i] = "max_rounds"
                else:
                    going.append(i)
            if not going:
                break
            rewrites = self.ask_conversations(
                [self._refine_prompt(requests[i], drafts[i], notes[i]) for i in going], text_reply
            )
            active = []
            for i, reply in zip(going, rewrites, strict=True):
                if reply.values:
                    drafts[i].append(reply.values[0]["text"])
                    active.append(i)
                else:
                    stop[i], errors[i] = "failed", reply.error or "empty rewrite"
        new_convs, chosen_scores = [], []
        for i, c in enumerate(convs):
            best = self._best(drafts[i], scores[i])
            chosen_scores.append(None if best is None or scores[i][best] is None else scores[i][best] / total)
            if best is None:
                new_convs.append(c)
                continue
            answer = {"role": "assistant", "content": drafts[i][best]}
            prompt = S.prompt_of(c)
            new_convs.append(list(prompt) + [answer])
            self.stats[f"stop:{stop[i]}"] += 1
            self.stats["rewrites"] += len(drafts[i]) - 1
        batch = S.put_column(batch, S.MESSAGES, pa.array(new_convs, S.CONVERSATION_TYPE))
        for name, values, typ in (
            ("refine_drafts", drafts, pa.list_(pa.string())),
            ("refine_feedback", notes, pa.list_(pa.string())),
            ("score_refine", chosen_scores, pa.float64()),
            ("refine_stop", stop, pa.string()),
            ("error_refine", errors, pa.string()),
        ):
            batch = S.put_column(batch, name, pa.array(values, typ))
        return batch

    @staticmethod
    def _best(drafts: list[str], scores: list[float | None]) -> int | None:
        """The best-scored response (the later one on a tie); the last when none was scored."""
        if not drafts:
            return None
        scored = [(s, j) for j, s in enumerate(scores[: len(drafts)]) if s is not None]
        return max(scored)[1] if scored else len(drafts) - 1

    def feedback_shape(self, total: int) -> Constraint:
        """The feedback prompt's format: "<aspect>: k/5 - why" per aspect, "Total score: s/total", and
        the stop phrase on a last line or not. The sum is the judge's to get right: it is read as given."""
        p = self.params
        why = (r"[^\n]", 1 / len(p.aspects), 1)
        pieces: list = []
        for aspect in p.aspects:
            pieces += [
                Part(text=f"{aspect}: "),
                Part(regex="[1-5]"),
                Part(text="/5 - "),
                why,
                Part(text="\n"),
            ]
        pieces += [Part(text="Total score: "), Part(regex="[0-9]{1,3}"), Part(text=f"/{total}")]
        pieces.append(Part(regex=f"\\n{escape(p.stop)}", optional=True))
        return fitted(p.max_tokens, pieces)

    def _feedback_prompt(self, request: str, response: str, total: int) -> list[dict]:
        text = prompts.fill(
            prompts.load(__file__, "self_refine_feedback.txt"),
            request=request,
            response=response,
            aspects=", ".join(self.params.aspects),
            total=str(total),
            stop=self.params.stop,
        )
        return [{"role": "user", "content": text}]

    def _refine_prompt(self, request: str, drafts: list[str], notes: list[str]) -> list[dict]:
        text = prompts.fill(
            prompts.load(__file__, "self_refine_refine.txt"),
            request=request,
            history=history_text(drafts, notes),
        )
        return [{"role": "user", "content": text}]
