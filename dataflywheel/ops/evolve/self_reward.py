"""Self-Rewarding Language Models (Yuan et al., ICML 2024): the policy judges its own responses and trains on
the pairs its judgements make.

``self_reward`` (a mapper) is one AIFT step's data half: for each prompt row the model samples ``n`` (4)
responses (temperature 0.7, top_p 0.9), judges each one ``judgements`` (3) times with the additive
5-point LLM-as-a-Judge prompt (written for this project after the paper's description; "Score: k" read
from the reply) and averages the judgements it could read. The highest- and lowest-scored responses
become the row's ``prompt`` / ``chosen`` / ``rejected``; a row whose best and worst tie, or with fewer
than two scored responses, gets no pair and says why in ``error_self_reward``. A judgement without a
readable score is counted as unparsed and left out of the average, never read as 0. The `dpo` step
that follows trains on the rows that have a pair; in a loop, the trained model is the next round's
policy and judge:

    - loop:
        iterations: 2
        steps:
          - self_reward: {model: policy}
          - dpo: {model: policy, output_model: policy, beta: 0.1}

Every row keeps its responses and their mean scores (``self_reward_responses``, ``self_reward_scores``).
``judge_mode: expected`` is the small-model variant (as ``alpagasus`` has): the judge is asked for the
total alone and the score is the expected value of its next-token distribution over "0".."5" (one
deterministic forward pass per response, so ``judgements`` does not apply); a model that never writes
"Score: k" (SmolLM2-135M) still judges.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import CHAT, LOGPROBS
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Mapper
from dataflywheel.ops.llm import LLMParams, LLMTask, text_reply
from dataflywheel.ops.parsing import expected_score, labelled_score_shape

_SCORE = re.compile(r"Score:\s*\**\s*([0-5](?:\.\d+)?)\b", re.IGNORECASE)


def judge_score(text: str) -> dict | None:
    """The last "Score: k" (0-5) of a judgement, or None."""
    found = _SCORE.findall(text or "")
    return {"score": float(found[-1])} if found else None


SCORES = [str(k) for k in range(6)]


def judge_prompt(question: str, response: str, mode: str = "generate") -> list[dict]:
    """The additive 5-point judge prompt: justify, then "Score: k" (generate), or the total alone."""
    name = "self_reward_judge.txt" if mode == "generate" else "self_reward_judge_expected.txt"
    text = prompts.fill(prompts.load(__file__, name), question=question, response=response)
    return [{"role": "user", "content": text}]


def judge_responses(op: LLMTask, items: list[tuple[str, str]], mode: str, judgements: int, max_tokens: int):
    """Each (question, response)'s mean score, or None when no judgement could be read; unparsed and
    failed judgements are counted in ``op.stats`` (``unparsed``, ``failed``) by the ask, or here."""
    convs = [judge_prompt(q, r, mode) for q, r in items]
    if mode == "expected":
        scores = [expected_score(lps, range(6)) if lps else None for lps in op.ask_options_of(convs, SCORES)]
        op.stats["unparsed"] += scores.count(None)
        return scores
    sampling = op.shaped(
        op.sampling().model_copy(update={"n": judgements, "max_tokens": max_tokens}),
        labelled_score_shape("Score", 0, 5, max_tokens),
    )
    scores = []
    for reply in op.ask_conversations(convs, judge_score, sampling):
        got = [v["score"] for v in reply.values]
        scores.append(float(np.mean(got)) if got else None)
    return scores


class SelfReward(LLMTask, Mapper):
    """Self-Rewarding: n sampled responses per prompt, each judged by the same model (additive 5-point
    prompt, judgements averaged); the best and worst become a preference pair, ties dropped."""

    class Params(LLMParams):
        n: int = Field(4, ge=2, description="responses sampled per prompt")
        temperature: float = Field(0.7, ge=0, description="response and judge sampling temperature")
        top_p: float = Field(0.9, gt=0, le=1, description="response sampling top_p")
        max_tokens: int = Field(256, ge=1, description="tokens per response at most")
        judgements: int = Field(3, ge=1, description="judgements averaged per response")
        judge_max_tokens: int = Field(160, ge=1, description="tokens per judgement at most")
        judge_mode: Literal["generate", "expected"] = Field(
            "generate", description='read "Score: k" from sampled judgements, or the expected score'
        )

    def model_needs(self) -> dict[str, tuple[str, ...]]:
        return {"model": (CHAT, LOGPROBS) if self.params.judge_mode == "expected" else (CHAT,)}

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}
    reads = (S.MESSAGES,)
    writes = (
        S.PROMPT,
        S.CHOSEN,
        S.REJECTED,
        "self_reward_responses",
        "self_reward_scores",
        "score_self_reward_margin",
        "error_self_reward",
    )
    batch_rows = 16

    def map(self, batch: pa.Table) -> pa.Table:
        p = self.params
        convs = batch.column(S.MESSAGES).to_pylist()
        n_rows = len(convs)
        asks = [S.prompt_of(c or []) for c in convs]
        asked = [i for i in range(n_rows) if asks[i] and asks[i][-1]["role"] == "user"]
        sampled = self.ask_conversations([asks[i] for i in asked], text_reply)
        responses: list[list[str]] = [[] for _ in range(n_rows)]
        errors: list[str | None] = [None] * n_rows
        answerable = set(asked)
        for i in range(n_rows):
            if i not in answerable:
                errors[i] = "no user turn to answer"
        for i, reply in zip(asked, sampled, strict=True):
            if reply.error is not None:
                errors[i] = f"request failed: {reply.error}"
            responses[i] = [v["text"] for v in reply.values]
        flat = [(i, j) for i in range(n_rows) for j in range(len(responses[i]))]
        judged = judge_responses(
            self,
            [(S.prompt_text(convs[i]), responses[i][j]) for i, j in flat],
            p.judge_mode,
            p.judgements,
            p.judge_max_tokens,
        )
        scores: list[list[float | None]] = [[None] * len(r) for r in responses]
        for (i, j), score in zip(flat, judged, strict=True):
            scores[i][j] = score
        prompt_col, chosen, rejected, margin = [], [], [], []
        for i in range(n_rows):
            scored = [(s, j) for j, s in enumerate(scores[i]) if s is not None]
            pair = None
            if errors[i] is None:
                if len(scored) < 2:
                    errors[i] = f"{len(scored)} of {len(responses[i])} responses could be scored"
                    self.stats["too_few_scored"] += 1
                else:
                    hi, lo = max(scored), min(scored)
                    if hi[0] == lo[0]:
                        errors[i] = f"tie: every scored response got {hi[0]:g}"
                        self.stats["tie"] += 1
                    else:
                        pair = (hi, lo)
            if pair is None:
                prompt_col.append(None)
                chosen.append(None)
                rejected.append(None)
                margin.append(None)
                continue
            (s_hi, j_hi), (s_lo, j_lo) = pair
            prompt_col.append(asks[i])
            chosen.append([{"role": "assistant", "content": responses[i][j_hi]}])
            rejected.append([{"role": "assistant", "content": responses[i][j_lo]}])
            margin.append(s_hi - s_lo)
            self.stats["pairs"] += 1
        for name, values, typ in (
            (S.PROMPT, prompt_col, S.CONVERSATION_TYPE),
            (S.CHOSEN, chosen, S.CONVERSATION_TYPE),
            (S.REJECTED, rejected, S.CONVERSATION_TYPE),
            ("self_reward_responses", responses, pa.list_(pa.string())),
            ("self_reward_scores", scores, pa.list_(pa.float64())),
            ("score_self_reward_margin", margin, pa.float64()),
            ("error_self_reward", errors, pa.string()),
        ):
            batch = S.put_column(batch, name, pa.array(values, typ))
        return batch
