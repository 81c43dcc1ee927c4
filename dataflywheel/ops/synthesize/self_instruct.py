"""Self-Instruct (Wang et al., ACL 2023): bootstrap instructions, and instances for them, from seed tasks.

One round: several prompts, each listing 8 tasks (2 machine-written when the pool has them, the rest
human seeds, shuffled) and asking the model to continue the list. Each new instruction must pass the
paper's filters: 4 to 150 words, none of the banned words (tasks a text model cannot do: images, files,
maps, drawing...), not "Write a program...", no leading punctuation or non-ASCII character, not the item
cut off by the length limit, and a ROUGE-L F-measure of at most 0.7 against every instruction already in
the pool (seeds, and every instruction kept so far, in order). Kept instructions join the pool at once.

Each kept instruction is then classified (few-shot: "Is it classification? Yes/No") and given instances:
input-first for generation tasks, output-first for classification tasks (a class label, then an input
for it, so labels stay balanced), greedily. The instance filters drop an instance whose input equals its
output, whose output is empty or ends in a colon (cut off), exact duplicates, and every instance of an
instruction whose same input got different outputs; at most ``instances_per_instruction`` remain. Each
instance becomes one row (instruction + input as the user turn, output as the response) with its parents:
the seed rows shown in the prompt that produced its instruction.

A reply that cannot be read (no task list, no Yes/No, no instance) is counted in the step's stats under
its own name and produces nothing; it is never read as a default. Presence penalties of the original
(GPT-3) sampling have no equivalent in every backend and are not applied.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.data.formats import ALPACA_JOIN
from dataflywheel.hashing import digest
from dataflywheel.lib.rouge import RougePool, rouge_tokens
from dataflywheel.models.base import CHAT, Sampling
from dataflywheel.models.constraint import Constraint
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Generator, GeneratorParams
from dataflywheel.ops.llm import LLMParams, LLMTask, seed_ids
from dataflywheel.ops.parsing import free_chars

BANNED_WORDS = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
    "map", "maps", "draw", "plot", "go to",
)  # fmt: skip
PROMPT_FILES = (
    "self_instruct_tasks.txt",
    "self_instruct_classify.txt",
    "self_instruct_input_first.txt",
    "self_instruct_output_first.txt",
)
_ITEM = re.compile(r"^\s*(\d+)\s*[.)]\s*(.*)$")
_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)
_EXAMPLE = re.compile(r"^\s*Example\s*\d+\s*:?\s*$", re.IGNORECASE | re.MULTILINE)
_OUTPUT = re.compile(r"^\s*Output\s*\d*\s*:", re.IGNORECASE | re.MULTILINE)
_INPUT = re.compile(r"^\s*Input\s*\d*\s*:", re.IGNORECASE | re.MULTILINE)
_FIELD = re.compile(r"^\s*(Input|Output|Class label)\s*:\s?", re.IGNORECASE | re.MULTILINE)


class SelfInstruct(LLMTask, Generator):
    """Self-Instruct: new instructions from 8-task prompts, novelty by ROUGE-L, then instances.

    Seeds are prompt rows (their first user turn is the task); rows with ``parents`` (made by an earlier
    generator or iteration) count as machine-written. ``rounds`` x ``prompts_per_round`` requests are sent
    per seed shard unless the budget stops it first. Writes ``instruction``, ``input``,
    ``is_classification`` and ``rouge_l_nearest`` (its highest ROUGE-L to the pool when it was kept) on
    every row, and ``prompt_version``. Follow with ``rouge_dedup`` to hold the 0.7 bound across shards.
    """

    class Params(GeneratorParams, LLMParams):
        temperature: float = Field(0.7, ge=0, description="instruction sampling temperature (paper: 0.7)")
        top_p: float = Field(0.5, gt=0, le=1, description="instruction sampling top_p (paper: 0.5)")
        max_tokens: int = Field(1024, ge=1, description="tokens per instruction-list reply (paper: 1024)")
        instance_max_tokens: int = Field(300, ge=1, description="tokens per instance reply (paper: 300)")
        rounds: int = Field(4, ge=1, description="instruction-generation rounds per seed shard")
        prompts_per_round: int = Field(8, ge=1, description="8-task prompts sent per round")
        prompt_tasks: int = Field(8, ge=2, description="tasks shown per prompt (paper: 8)")
        machine_tasks: int = Field(2, ge=0, description="of which machine-written, when available")
        rouge_threshold: float = Field(0.7, gt=0, le=1, description="ROUGE-L above this is not new")
        min_words: int = Field(4, ge=1, description="shortest instruction kept, in words (paper: > 3)")
        max_words: int = Field(150, ge=1, description="longest instruction kept, in words")
        banned_words: list[str] = Field(list(BANNED_WORDS), description="whole words that drop a task")
        classify: bool = Field(True, description="identify classification tasks (output-first instances)")
        instances_per_instruction: int = Field(5, ge=1, description="instances kept per instruction")
        keep_seeds: bool = Field(False, description="the seed tasks pass through too")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}
    reads = (S.MESSAGES,)
    writes = (S.MESSAGES, "instruction", "input", "is_classification", "rouge_l_nearest", "prompt_version")

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        p = self.params
        run = _Bootstrap(p, seeds, random.Random(digest("self_instruct", self.ctx.seed, seed_ids(seeds))))
        version = digest(*(prompts.load(__file__, f) for f in PROMPT_FILES))[:12]
        base_seed = p.seed if p.seed is not None else self.ctx.seed
        for r in range(p.rounds):
            if not run.human:
                self.stats["no_seed_tasks"] += 1
                return
            convs, shown = run.prompts(p.prompts_per_round)
            sampling = Sampling(
                temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, n=p.n,
                seed=base_seed + r, stop=[f"\n{p.prompt_tasks + 8}."],
            )  # fmt: skip
            new: list[_Task] = []
            listed = self.ask_conversations(convs, _tasks_or_none, self.shaped(sampling, TASK_LIST))
            for reply, parents in zip(listed, shown, strict=True):
                if reply.error is not None:
                    continue
                for finish, got in zip(reply.finishes, reply.parsed, strict=True):
                    if got is None:
                        continue
                    items = got["tasks"]
                    if finish == "length" and items:
                        items = items[:-1]  # the last task was cut off by the length limit
                        self.stats["instruction_dropped_truncated"] += 1
                    for inst in items:
                        task = run.consider(inst, parents, self.stats)
                        if task is not None:
                            new.append(task)
            self.stats["instructions_kept"] += len(new)
            if p.classify:
                self._classify(new)
                new = [t for t in new if t.is_classification is not None]
            self._instances(new)
            for task in new:
                for inp, out in task.instances:
                    user = f"{task.instruction}{ALPACA_JOIN}{inp}" if inp.strip() else task.instruction
                    yield {
                        S.MESSAGES: [
                            {"role": "user", "content": user},
                            {"role": "assistant", "content": out},
                        ],
                        "instruction": task.instruction,
                        "input": inp,
                        "is_classification": task.is_classification,
                        "rouge_l_nearest": task.nearest,
                        "prompt_version": version,
                        S.PARENTS: task.parents,
                    }

    # Stages 2 and 3 ask about the whole round's instructions at once: one batched model call each.
    def _classify(self, tasks: list[_Task]) -> None:
        template = prompts.load(__file__, "self_instruct_classify.txt")
        convs = [
            [{"role": "user", "content": prompts.fill(template, instruction=t.instruction)}] for t in tasks
        ]
        sampling = self.shaped(Sampling(temperature=0.0, max_tokens=3), Constraint(choice=["Yes", "No"]))
        for task, reply in zip(tasks, self.ask_conversations(convs, _yes_no, sampling), strict=True):
            got = reply.values
            task.is_classification = got[0]["yes"] if got else None
            if not got:
                self.stats["classification_unread"] += 1

    def _instances(self, tasks: list[_Task]) -> None:
        p = self.params
        convs, readers = [], []
        for t in tasks:
            name = (
                "self_instruct_output_first.txt" if t.is_classification else "self_instruct_input_first.txt"
            )
            text = prompts.fill(prompts.load(__file__, name), instruction=t.instruction)
            convs.append([{"role": "user", "content": text}])
            readers.append(_labelled_or_none if t.is_classification else _instances_or_none)
        sampling = Sampling(temperature=0.0, max_tokens=p.instance_max_tokens, stop=["\nTask:"])
        shapes = instance_shapes(p.instance_max_tokens)
        samplings = [self.shaped(sampling, shapes[bool(t.is_classification)]) for t in tasks]
        for task, reply in zip(tasks, self.ask_grouped(convs, readers, samplings), strict=True):
            got = reply.values
            if not got:
                self.stats["instances_unread"] += 1
                continue
            kept, dropped = filter_instances(got[0]["instances"])
            for reason, count in dropped.items():
                self.stats[f"instance_dropped_{reason}"] += count
            task.instances = kept[: p.instances_per_instruction]
            if not task.instances:
                self.stats["instruction_without_instances"] += 1


@dataclass
class _Task:
    instruction: str
    parents: list[str]
    nearest: float
    is_classification: bool | None = None
    instances: list[tuple[str, str]] = field(default_factory=list)


class _Bootstrap:
    """The task pool of one seed shard: human and machine tasks, the ROUGE-L index, prompt sampling."""

    def __init__(self, p: SelfInstruct.Params, seeds: pa.Table, rng: random.Random):
        self.p, self.rng = p, rng
        self.pool = RougePool(p.rouge_threshold)
        self.human: list[tuple[str, str]] = []
        self.machine: list[tuple[str, list[str]]] = []
        has = S.PARENTS in seeds.column_names
        made = seeds.column(S.PARENTS).to_pylist() if has else [None] * len(seeds)
        for sid, conv, made_from in zip(
            seeds.column(S.ID).to_pylist(), seeds.column(S.MESSAGES).to_pylist(), made, strict=True
        ):
            text = next((m["content"] for m in conv or [] if m["role"] == "user"), None)
            if not text or not text.strip():
                continue
            text = text.strip()
            self.pool.add(text)
            if not made_from:
                self.human.append((text, sid))
            else:
                self.machine.append((text, [sid]))
        self._banned = re.compile(
            r"\b(" + "|".join(re.escape(w) for w in p.banned_words) + r")\b", re.IGNORECASE
        ) if p.banned_words else None  # fmt: skip

    def prompts(self, count: int) -> tuple[list[list[dict]], list[list[str]]]:
        p, rng = self.p, self.rng
        template = prompts.load(__file__, "self_instruct_tasks.txt")
        convs, shown = [], []
        for _ in range(count):
            machine = rng.sample(self.machine, min(p.machine_tasks, len(self.machine)))
            human = rng.sample(self.human, min(p.prompt_tasks - len(machine), len(self.human)))
            tasks = [(t, [sid]) for t, sid in human] + machine
            rng.shuffle(tasks)
            listing = "\n".join(f"{i}. {' '.join(t.split())}" for i, (t, _) in enumerate(tasks, 1))
            nxt = len(tasks) + 1
            convs.append([{"role": "user", "content": prompts.fill(template, tasks=listing, next=str(nxt))}])
            shown.append(sorted({sid for _, sids in tasks for sid in sids}))
        return convs, shown

    def consider(self, inst: str, parents: list[str], stats) -> _Task | None:
        """The task if it passes the filters (it then joins the pool), else None with the reason counted."""
        reason = instruction_problem(inst, self.p.min_words, self.p.max_words, self._banned)
        tokens = rouge_tokens(inst)
        nearest = 0.0
        if reason is None:
            nearest = self.pool.nearest(inst, tokens, exact=True).score
            if nearest > self.p.rouge_threshold:
                reason = "similar"
        if reason is not None:
            stats[f"instruction_dropped_{reason}"] += 1
            return None
        self.pool.add(inst, tokens)
        self.machine.append((inst, parents))
        return _Task(inst, parents, nearest)


# The continued list: numbered lines only, from the first character (no preamble becomes a task).
TASK_LINE = r"[0-9]{1,3}\. [A-Za-z][^\n]{2,300}"
TASK_LIST = Constraint(regex=rf"({TASK_LINE}\n)*{TASK_LINE}")


def instance_shapes(max_tokens: int) -> dict[bool, Constraint]:
    """The instance formats of the two prompts (classification: output first), by is_classification.
    Input-first: an optional one-line "Input:", then "Output:" (free, it may span lines). Output-first:
    "Class label: L" with an optional "Input:" line, up to four of them."""
    room = free_chars(max_tokens)
    line = max(1, room // 3)
    labelled = rf"Class label: [^\n]{{1,60}}(\nInput: [^\n]{{1,{line}}})?"
    return {
        False: Constraint(regex=rf"(Input: [^\n]{{1,{line}}}\n)?Output: [\s\S]{{1,{max(1, room - line)}}}"),
        True: Constraint(regex=rf"{labelled}(\n{labelled}){{0,3}}"),
    }


def parse_task_list(reply: str) -> list[str]:
    """The tasks of a continued numbered list, as the paper splits them: every numbered line starts a
    task (whatever its number: a small model often restarts at 1, and an echoed example is caught by
    the novelty filter), text before the first number is the list's next task, whitespace collapsed."""
    items: list[list[str]] = []
    for line in reply.splitlines():
        m = _ITEM.match(line)
        if m:
            text = m.group(2)
            while (again := _ITEM.match(text)) is not None:  # "1. 1. task": a doubled number
                text = again.group(2)
            items.append([text])
        elif items:
            items[-1].append(line)
        elif line.strip():
            items.append([line])
    out = []
    for parts in items:
        text = re.sub(r"\s+", " ", " ".join(parts)).strip()
        if text:
            out.append(text)
    return out


def instruction_problem(inst: str, min_words: int, max_words: int, banned: re.Pattern | None) -> str | None:
    """Why the paper's filters drop an instruction (a short reason), or None when it passes them."""
    words = len(inst.split())
    if words < min_words:
        return "too_short"
    if words > max_words:
        return "too_long"
    if banned is not None and banned.search(inst):
        return "banned_word"
    if inst.startswith("Write a program"):
        return "program"
    if inst[0] in string.punctuation:
        return "punctuation"
    if not inst[0].isascii():
        return "non_ascii"
    return None


def filter_instances(instances: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """The paper's instance filters; returns the kept instances (first occurrence order) and drop counts."""
    dropped: dict[str, int] = {}
    outputs: dict[str, set[str]] = {}
    for inp, out in instances:
        if inp.strip():
            outputs.setdefault(inp.strip(), set()).add(out.strip())
    if any(len(v) > 1 for v in outputs.values()):
        return [], {"same_input_different_output": len(instances)}
    kept, seen = [], set()
    for inp, out in instances:
        reason = None
        if not out.strip():
            reason = "empty_output"
        elif inp.strip() == out.strip():
            reason = "input_equals_output"
        elif inp.strip().endswith(":") or out.strip().endswith(":"):
            reason = "cut_off"
        elif (inp.strip(), out.strip()) in seen:
            reason = "duplicate"
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        seen.add((inp.strip(), out.strip()))
        kept.append((inp.strip(), out.strip()))
    return kept, dropped


def parse_instances(reply: str) -> list[tuple[str, str]]:
    """Input-first instances, as the paper reads them: "Example k" blocks (or the whole reply), each
    split at "Output:" into input (after an optional "Input:") and output; a block with no "Output:" is
    one output with no input."""
    reply = reply.split("\nTask:")[0]
    blocks = [b for b in _EXAMPLE.split(reply) if b.strip()] if _EXAMPLE.search(reply) else [reply]
    out = []
    for block in blocks:
        head, sep, output = _split_output(block)
        inp = _INPUT.sub("", head, count=1).strip() if sep else ""
        if inp.lower() in ("none", "n/a", "-", "(none)", "<noinput>", "no input", "null"):
            inp = ""
        out.append((inp, (output if sep else block).strip()))
    return [(i, o) for i, o in out if o]


def _split_output(block: str) -> tuple[str, bool, str]:
    parts = _OUTPUT.split(block, maxsplit=1)
    return (parts[0], True, parts[1]) if len(parts) == 2 else (block, False, "")


def parse_labelled(reply: str) -> list[tuple[str, str]]:
    """Output-first instances: "Class label: L" then "Input: x" -> (x, L); a label alone -> ("", L)."""
    reply = reply.split("\nTask:")[0]
    out: list[tuple[str, str]] = []
    label = None
    for name, value in _field_list(reply):
        if name == "class label":
            if label is not None:
                out.append(("", label))
            label = value
        elif name == "input" and label is not None:
            out.append((value, label))
            label = None
    if label is not None:
        out.append(("", label))
    return [(i, o) for i, o in out if o]


def _field_list(block: str) -> list[tuple[str, str]]:
    parts = _FIELD.split(block)
    return [(parts[i].lower(), parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]


def _tasks_or_none(text: str) -> dict | None:
    items = parse_task_list(text)
    return {"tasks": items} if items else None


def _yes_no(text: str) -> dict | None:
    m = _YES_NO.match(text.strip())
    return None if m is None else {"yes": m.group(1).lower() == "yes"}


def _instances_or_none(text: str) -> dict | None:
    got = parse_instances(text)
    return {"instances": got} if got else None


def _labelled_or_none(text: str) -> dict | None:
    got = parse_labelled(text)
    return {"instances": got} if got else None
