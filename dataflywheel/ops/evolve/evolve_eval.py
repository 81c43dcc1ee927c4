"""Benchmark Self-Evolving (Wang et al., COLING 2025): reframe the items of a math word-problem evaluation set
(GSM8K's question + "... #### n" solution) into new, verified items.

``evolve_eval`` (a generator) applies each of ``operations`` to every seed item with the generator model
(greedy, as the paper's temperature 0):

* ``paraphrase``: the same problem in other words (the answer must not change);
* ``add_noise``: an irrelevant or misleading sentence added (the answer must not change);
* ``reverse_polarity``: the problem edited so that its answer changes (a new solution);
* ``alternative_question``: the same situation, a different question (a new solution);
* ``complex_question``: a harder, composite question on the same situation (a new solution).

Operations that keep the answer get the seed's solution; the others must write "Answer: ... #### n". The
``verifier`` model (default: the generator) then solves the new item itself and judges it ("Judgement:
yes/no" on its last line); an item judged no, or whose judgement cannot be read, is dropped and counted,
never kept by default. With ``prefilter`` a seed is used only when the generator answers the original
correctly (the paper keeps items its generator solves). New rows name their seed in ``parents`` and the
operation in ``evolve_op``: evaluate a model on the seeds and on the evolved rows (``eval_accuracy``)
to see the gap.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.evaluate.tasks import gsm8k_answer, gsm8k_correct
from dataflywheel.hashing import digest
from dataflywheel.models.base import CHAT, Sampling
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Generator, GeneratorParams, ModelRef
from dataflywheel.ops.llm import LLMParams, LLMTask, text_reply

Operation = Literal["paraphrase", "add_noise", "reverse_polarity", "alternative_question", "complex_question"]
KEEPS_ANSWER = {"paraphrase", "add_noise"}
INSTRUCTIONS = {
    "paraphrase": (
        "Rewrite the problem in different words. Keep every quantity, fact and the question the same, "
        "so that the answer does not change."
    ),
    "add_noise": (
        "Add one sentence to the problem that is irrelevant to the question or could mislead a careless "
        "reader, without changing any fact needed to solve it, so that the answer does not change."
    ),
    "reverse_polarity": (
        "Change one detail of the problem (a number or a relation) so that the answer becomes different, and "
        "solve the new problem."
    ),
    "alternative_question": (
        "Keep the situation of the problem but ask a different question about it, and solve it."
    ),
    "complex_question": (
        "Ask a harder question about the same situation that needs more steps to answer, and solve it."
    ),
}
QUESTION_ONLY = 'Reply with the new problem only, starting with "Question:".'
WITH_ANSWER = (
    'Reply in this format: "Question: <the new problem>" then "Answer: <the calculation step by step> '
    '#### <the final number>".'
)
_QUESTION = re.compile(r"Question:\s*(?P<q>.+?)(?:\s*Answer:\s*(?P<a>.+))?$", re.DOTALL | re.IGNORECASE)
_JUDGEMENT = re.compile(r"Judgement:\s*\**\s*(yes|no)\b", re.IGNORECASE)


def parse_item(text: str, needs_answer: bool) -> dict | None:
    """The new item of a generator reply: its question, and (when it must have one) its solution with a
    final "#### n"."""
    m = _QUESTION.search(text.strip())
    if m is None or not m.group("q").strip():
        return None
    answer = (m.group("a") or "").strip()
    if needs_answer and not re.search(r"####\s*-?[\d,]*\.?\d", answer):
        return None
    return {"question": m.group("q").strip(), "answer": answer}


def parse_judgement(text: str) -> dict | None:
    found = _JUDGEMENT.findall(text or "")
    return {"ok": found[-1].lower() == "yes"} if found else None


class EvolveEval(LLMTask, Generator):
    """Benchmark Self-Evolving: paraphrased, noised, reversed, alternative and harder versions of each
    evaluation item, each verified by a second judgement."""

    class Params(GeneratorParams, LLMParams):
        operations: list[Operation] = Field(
            ["paraphrase", "add_noise", "reverse_polarity", "alternative_question", "complex_question"],
            min_length=1,
            description="the reframing operations applied to every seed",
        )
        verifier: str | None = ModelRef("the model that verifies new items (default: model)", None)
        prefilter: bool = Field(True, description="use only seeds the generator answers correctly")
        max_tokens: int = Field(512, ge=1, description="tokens per new item or judgement at most")
        keep_seeds: bool = Field(False, description="the seed items pass through too")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,), "verifier": (CHAT,)}
    reads = (S.MESSAGES,)
    writes = (S.MESSAGES, "evolve_op", "prompt_version")

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        p = self.params
        version = digest(
            *(prompts.load(__file__, f"evolve_eval_{f}.txt") for f in ("generate", "verify")), INSTRUCTIONS
        )[:12]
        items = []
        for sid, conv in zip(
            seeds.column(S.ID).to_pylist(), seeds.column(S.MESSAGES).to_pylist(), strict=True
        ):
            question = S.prompt_text(conv)
            answer = S.last_turn(conv or [], "assistant")
            if question.strip() and answer and gsm8k_answer(answer) is not None:
                items.append((sid, question, answer))
            else:
                self.stats["seed_unusable"] += 1
        greedy = Sampling(temperature=0.0, max_tokens=p.max_tokens)
        if p.prefilter and items:
            solved = self.ask_conversations([_user(q) for _, q, _ in items], text_reply, greedy)
            kept = []
            for item, reply in zip(items, solved, strict=True):
                if reply.values and gsm8k_correct(reply.values[0]["text"], item[2]):
                    kept.append(item)
                else:
                    self.stats["prefiltered_out"] += 1
            items = kept
        jobs = [(item, op) for item in items for op in p.operations]
        convs = [
            _user(
                prompts.fill(
                    prompts.load(__file__, "evolve_eval_generate.txt"),
                    question=q,
                    answer=a,
                    instruction=INSTRUCTIONS[op],
                    format=QUESTION_ONLY if op in KEEPS_ANSWER else WITH_ANSWER,
                )
            )
            for (_, q, a), op in jobs
        ]
        parsers = [lambda t, op=op: parse_item(t, op not in KEEPS_ANSWER) for _, op in jobs]
        made = []
        for ((sid, _, answer), op), reply in zip(
            jobs, self.ask_conversations(convs, parsers, greedy), strict=True
        ):
            if not reply.values:
                continue  # failed or unparsed: counted by the base
            new = reply.values[0]
            solution = answer if op in KEEPS_ANSWER else new["answer"]
            made.append((sid, op, new["question"], solution))
        verdicts = self.ask_conversations(
            [
                _user(
                    prompts.fill(
                        prompts.load(__file__, "evolve_eval_verify.txt"),
                        question=q,
                        final=_final(s),
                    )
                )
                for _, _, q, s in made
            ],
            parse_judgement,
            greedy,
            model=p.verifier,
        )
        for (sid, op, question, solution), verdict in zip(made, verdicts, strict=True):
            if not verdict.values:
                self.stats["unverified"] += 1
                continue
            if not verdict.values[0]["ok"]:
                self.stats[f"rejected:{op}"] += 1
                continue
            self.stats[f"made:{op}"] += 1
            yield {
                S.MESSAGES: [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": solution},
                ],
                "evolve_op": op,
                "prompt_version": version,
                S.PARENTS: [sid],
            }


def _final(solution: str) -> str:
    value = gsm8k_answer(solution)
    return "(none)" if value is None else f"{value:g}"


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]
