"""Benchmark Self-Evolving (Wang et al., COLING 2025): reframe the items of a math word-problem evaluation set
(GSM8K's question + "... #### n" solution) into new, verified items.

``evolve_eval`` (a generator) applies each of ``operations`` to every seed item with the generator model
(greedy, as the paper's temperature 0):

* ``paraphrase``: the same problem in other words (the answer must not change);
* ``add_noise``: an irrelevant or misleading sentence added (the answer must not change);
* ``reverse_polarity``: the problem edited so that its answer changes (a new solution);
* ``alternative_question``: the same situation, a different question (a new solution);
* ``complex_question``: a harder, composite question on the same situation (a new solution);
* sub-ability probes, two-way choices: ``retrieval`` (a fact the problem states), ``planning`` (how the
  solution should proceed), ``knowledge`` (a fact from outside the problem that solving it needs). The
  generator writes the question and its correct answer, the ``option_model`` (default: the generator)
  a plausible wrong answer, and the verifier checks both (double verification): the probe is kept only
  when it accepts the correct answer and rejects the wrong one. The row asks "A) ... B) ..." with the
  correct answer's place chosen from the seed and probe (balanced, reproducible) and answers "The answer
  is (X)."

Operations that keep the answer get the seed's solution; the others must write "Answer: ... #### n". The
``verifier`` model (default: the generator) then solves the new item itself and judges it ("Judgement:
yes/no" on its last line); an item judged no, or whose judgement cannot be read, is dropped and counted,
never kept by default. With ``prefilter`` a seed is used only when the generator answers the original
correctly (the paper keeps items its generator solves). New rows name their seed in ``parents`` and the
operation in ``evolve_op``: ``eval_accuracy: {task: auto, by: evolve_op}`` after the step (with
``keep_seeds: true``) measures a model on the seeds and on each evolved kind in one pass.
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
from dataflywheel.models.constraint import Constraint, Part, ending_shape
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Generator, GeneratorParams, ModelRef
from dataflywheel.ops.llm import LLMParams, LLMTask, text_reply
from dataflywheel.ops.parsing import fitted, free, free_tokens, problem_shape

Operation = Literal[
    "paraphrase",
    "add_noise",
    "reverse_polarity",
    "alternative_question",
    "complex_question",
    "retrieval",
    "planning",
    "knowledge",
]
KEEPS_ANSWER = {"paraphrase", "add_noise"}
PROBES = {"retrieval", "planning", "knowledge"}
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
    "retrieval": (
        "Ask a short question whose answer is a fact stated in the problem (a quantity or a detail given "
        "in it), and give that answer."
    ),
    "planning": (
        "Ask a short question about how to solve the problem (which quantity to compute first, or which "
        "operation a step needs), and give the correct answer."
    ),
    "knowledge": (
        "Ask a short question about a fact that solving the problem needs but the problem does not state "
        "(a unit conversion, a definition, an everyday fact), and give the answer."
    ),
}
PROBE_FORMAT = (
    'Reply in this format: "Question: <the new question>" then "Answer: <the correct answer in one short '
    'sentence>".'
)
_WRONG = re.compile(r"Wrong answer:\s*(?P<w>.+)", re.DOTALL | re.IGNORECASE)
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


def parse_wrong_option(text: str) -> dict | None:
    m = _WRONG.search(text.strip())
    wrong = m.group("w").strip().splitlines()[0].strip() if m else ""
    return {"wrong": wrong} if wrong else None


def probe_row(context: str, question: str, right: str, wrong: str, key: str) -> list[dict]:
    """A two-way choice: the correct answer's place (A or B) follows ``key``'s digest."""
    right_first = int(digest(key)[:8], 16) % 2 == 0
    a, b = (right, wrong) if right_first else (wrong, right)
    letter = "A" if right_first else "B"
    ask = f"{context}\n\nQuestion: {question}\nA) {a}\nB) {b}\nAnswer with A or B."
    return [{"role": "user", "content": ask}, {"role": "assistant", "content": f"The answer is ({letter})."}]


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
        option_model: str | None = ModelRef("the model writing probes' wrong options (default: model)", None)
        prefilter: bool = Field(True, description="use only seeds the generator answers correctly")
        max_tokens: int = Field(512, ge=1, description="tokens per new item or judgement at most")
        keep_seeds: bool = Field(False, description="the seed items pass through too")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {
        "model": (CHAT,),
        "verifier": (CHAT,),
        "option_model": (CHAT,),
    }
    reads = (S.MESSAGES,)
    writes = (S.MESSAGES, "evolve_op", "prompt_version")

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        p = self.params
        files = ("generate", "verify", "option", "verify_probe")
        version = digest(*(prompts.load(__file__, f"evolve_eval_{f}.txt") for f in files), INSTRUCTIONS)[:12]
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
                    format=_format(op),
                )
            )
            for (_, q, a), op in jobs
        ]
        parsers = [lambda t, op=op: _parse_new(t, op) for _, op in jobs]
        shaped = [self.shaped(greedy, item_shape(op, p.max_tokens)) for _, op in jobs]
        made, probes = [], []
        for ((sid, context, answer), op), reply in zip(
            jobs, self.ask_grouped(convs, parsers, shaped), strict=True
        ):
            if not reply.values:
                continue  # failed or unparsed: counted by the base
            new = reply.values[0]
            if op in PROBES:
                probes.append((sid, op, context, new["question"], new["answer"]))
            else:
                made.append((sid, op, new["question"], answer if op in KEEPS_ANSWER else new["answer"]))
        yield from self._probes(probes, greedy, version)
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
            self.shaped(greedy, judgement_shape(p.max_tokens)),
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

    def _probes(self, probes: list[tuple], greedy: Sampling, version: str) -> Iterator[dict]:
        """Wrong options from the option model, then the verifier on both answers of every probe."""
        p = self.params
        ask_wrong = prompts.load(__file__, "evolve_eval_option.txt")
        options = self.ask_conversations(
            [_user(prompts.fill(ask_wrong, context=c, question=q, answer=a)) for _, _, c, q, a in probes],
            parse_wrong_option,
            self.shaped(
                greedy, Constraint(parts=[Part(text="Wrong answer: "), free(free_tokens(p.max_tokens))])
            ),
            model=p.option_model,
        )
        checked = []
        for probe, option in zip(probes, options, strict=True):
            if not option.values:
                self.stats["no_wrong_option"] += 1
                continue
            checked.append((*probe, option.values[0]["wrong"]))
        template = prompts.load(__file__, "evolve_eval_verify_probe.txt")
        asks = [
            _user(prompts.fill(template, context=c, question=q, answer=answer))
            for _, _, c, q, a, w in checked
            for answer in (a, w)
        ]
        judged = self.shaped(greedy, judgement_shape(p.max_tokens))
        verdicts = self.ask_conversations(asks, parse_judgement, judged, model=p.verifier)
        for k, (sid, op, context, question, right, wrong) in enumerate(checked):
            on_right, on_wrong = verdicts[2 * k], verdicts[2 * k + 1]
            if not on_right.values or not on_wrong.values:
                self.stats["unverified"] += 1
            elif not on_right.values[0]["ok"]:
                self.stats[f"rejected:{op}"] += 1
            elif on_wrong.values[0]["ok"]:  # the verifier cannot tell the wrong option from the right one
                self.stats[f"wrong_option_accepted:{op}"] += 1
            elif right.strip().lower() == wrong.strip().lower():
                self.stats[f"rejected:{op}"] += 1
            else:
                self.stats[f"made:{op}"] += 1
                yield {
                    S.MESSAGES: probe_row(context, question, right, wrong, f"{sid}:{op}"),
                    "evolve_op": op,
                    "prompt_version": version,
                    S.PARENTS: [sid],
                }


def item_shape(op: str, max_tokens: int) -> Constraint:
    """What a generator reply must look like for ``op`` (its ``_format``): "Question: ..." on one line,
    then for probes a one-line "Answer: ...", for answer-changing operations "Answer: ... #### n"; the
    parts share the reply's budget."""
    if op in KEEPS_ANSWER:
        return Constraint(parts=[Part(text="Question: "), free(free_tokens(max_tokens), "[^\\n#]")])
    if op in PROBES:
        line = (r"[^\n]", 0.5, 1)
        return fitted(max_tokens, [Part(text="Question: "), line, Part(text="\nAnswer: "), line])
    return problem_shape(max_tokens)


def judgement_shape(max_tokens: int) -> Constraint:
    """The verifier's own solution (one paragraph), then its "Judgement: yes|no" line."""
    return ending_shape(r"\nJudgement: (yes|no)", free_tokens(max_tokens), avoid="\n")


def _format(op: str) -> str:
    if op in PROBES:
        return PROBE_FORMAT
    return QUESTION_ONLY if op in KEEPS_ANSWER else WITH_ANSWER


def _parse_new(text: str, op: str) -> dict | None:
    item = parse_item(text, needs_answer=op not in KEEPS_ANSWER and op not in PROBES)
    if item is not None and op in PROBES:
        item["answer"] = item["answer"].strip().splitlines()[0].strip() if item["answer"].strip() else ""
        if not item["answer"]:
            return None
    return item


def _final(solution: str) -> str:
    value = gsm8k_answer(solution)
    return "(none)" if value is None else f"{value:g}"


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]
