from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pyarrow as pa
import xxhash
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import CHAT, LOGPROBS
from dataflywheel.ops.base import Scorer
from dataflywheel.ops.llm import LLMParams, LLMTask, row_error


def perturb(text: str, drop: float, seed: int, key: str, k: int) -> str:
    """Drop each word with probability `drop`, from a generator seeded by (seed, row key, k): the same
    row always gets the same K perturbations."""
    words = text.split(" ")
    rng = np.random.default_rng([seed, xxhash.xxh32_intdigest(key.encode()), k])
    kept = [w for w, gone in zip(words, rng.random(len(words)) < drop, strict=True) if not gone]
    return " ".join(kept) if kept else words[0]


class PromptUncertainty(LLMTask, Scorer):
    """Prompt uncertainty of Active Instruction Tuning (Kung et al., EMNLP 2023).

    The model answers the original prompt greedily (its own prediction y; no labels needed). Then K
    perturbed prompts drop each token (whitespace-separated) of the task instruction I with probability
    0.2, leaving the instance input x intact, and PU = mean_k |p(y | I, x) - p(y | I'_k, x)|, with
    p = exp(-mean token NLL) the sentence likelihood. Also ``score_pp`` = p(y | I, x), the prediction
    probability (the Task Map's other axis: low PP is "difficult", high PU "ambiguous"). A prediction that
    fails or comes back empty leaves both null and says why in ``error_pu``.

    Where the instruction is, in the conversation's last user turn: the text of ``instruction_column``
    when a row has it (a task definition, as NIV2's); otherwise the turn's first paragraph when an input
    follows it after a blank line (how Alpaca's instruction and input are joined); otherwise the whole
    turn. Earlier turns stay as they are. For task-level selection, aggregate by a task column with
    ``group_select``.
    """

    class Params(LLMParams):
        perturbations: int = Field(10, ge=1, description="K perturbed instructions per row (paper: 10)")
        drop: float = Field(0.2, gt=0, lt=1, description="probability of dropping each word (paper: 0.2)")
        max_tokens: int = Field(64, ge=1, description="length of the model's own prediction")
        seed: int | None = Field(
            None, description="seed of the perturbations (and sampling); the recipe's seed when unset"
        )
        instruction_column: str | None = Field(
            None, description="column with each row's task instruction (the text perturbed in the prompt)"
        )

    reads = (S.MESSAGES,)
    writes = ("score_pu", "score_pp", "error_pu")
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT, LOGPROBS)}
    batch_rows = 16

    def input_columns(self) -> list[str]:
        return [S.MESSAGES] + ([self.params.instruction_column] if self.params.instruction_column else [])

    def score(self, batch: pa.Table) -> dict:
        p = self.params
        seed = p.seed if p.seed is not None else self.ctx.seed
        model = self.llm()
        convs = batch.column(S.MESSAGES).to_pylist()
        ids = batch.column(S.ID).to_pylist()
        given = (
            batch.column(p.instruction_column).to_pylist() if p.instruction_column else [None] * len(convs)
        )
        prompts = [S.prompt_of(c) for c in convs]
        preds = [r[0] for r in self.ask([{S.MESSAGES: c} for c in convs])]  # the model's own answers
        errors = [None if r.values else row_error([r]) for r in preds]
        ctxs, resps, owner = [], [], []
        for r, (prompt, pred) in enumerate(zip(prompts, preds, strict=True)):
            if not pred.values:
                continue
            before, instruction, after = split_instruction(_last_user(prompt), given[r])
            variants = [prompt] + [
                _replace_last_user(prompt, before + perturb(instruction, p.drop, seed, ids[r], k) + after)
                for k in range(p.perturbations)
            ]
            ctxs += variants
            resps += [pred.values[0]["text"]] * len(variants)
            owner.append(r)
        scored = model.logprobs(ctxs, resps)
        pu, pp = [None] * len(convs), [None] * len(convs)
        per = p.perturbations + 1
        for j, r in enumerate(owner):
            group = scored[j * per : (j + 1) * per]
            if any(g.mean_nll is None for g in group):
                errors[r] = next(f"scoring failed: {g.error}" for g in group if g.mean_nll is None)
                continue
            probs = [math.exp(-g.mean_nll) for g in group]
            pp[r] = probs[0]
            pu[r] = float(np.mean([abs(probs[0] - q) for q in probs[1:]]))
        return {"score_pu": pu, "score_pp": pp, "error_pu": pa.array(errors, pa.string())}

    def prompt(self, row: dict) -> list[dict]:
        return S.prompt_of(row[S.MESSAGES])

    def parse(self, reply: str, row: dict) -> dict:
        return {"text": reply}


def split_instruction(turn: str, instruction: str | None = None) -> tuple[str, str, str]:
    """(before, instruction, after) of a user turn: only the middle part is perturbed."""
    if instruction and instruction in turn:
        i = turn.index(instruction)
        return turn[:i], instruction, turn[i + len(instruction) :]
    head, sep, rest = turn.partition("\n\n")
    if sep and rest.strip():
        return "", head, sep + rest
    return "", turn, ""


def _last_user(conv: list[dict]) -> str:
    return next((m["content"] for m in reversed(conv) if m["role"] == "user"), "")


def _replace_last_user(conv: list[dict], text: str) -> list[dict]:
    out = [dict(m) for m in conv]
    for m in reversed(out):
        if m["role"] == "user":
            m["content"] = text
            break
    return out
