"""Detect a dataset's format from its fields and convert rows to and from the canonical model.

Supported formats (``FORMATS``): ``messages`` (OpenAI chat), ``sharegpt``, ``alpaca``, ``alpaca_eval``
(AlpacaEval model outputs), ``pairwise`` (AlpacaEval annotations: two outputs and a preference),
``instructions`` (prompt-only seed sets), ``multiple_choice`` (MMLU / ARC layouts: a question, its options
and the correct one), ``prompt_completion`` and
``preference`` (``prompt``/``chosen``/``rejected``, conversational or plain strings, explicit or implicit
prompt, including HH-RLHF transcripts).

Every converter raises :class:`DataError` naming the field and what was expected; the reader adds the file
and the line. Fields a format does not consume are kept as extra columns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from dataflywheel.data import schema as S
from dataflywheel.errors import DataError, Location, short_repr

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
    "observation": "tool",
    "function": "tool",
    "function_call": "assistant",
}
ROLE_TO_SHAREGPT = {"user": "human", "assistant": "gpt", "system": "system", "tool": "observation"}
HH_TURN = re.compile(r"\n\n(Human|Assistant): ")
ALPACA_JOIN = "\n\n"  # instruction and input are joined by a blank line, as in Stanford Alpaca's prompt


class _Row:
    """A raw row being converted: remembers which fields were used and where the row came from."""

    __slots__ = ("raw", "used", "where")

    def __init__(self, raw: dict, where: Location):
        self.raw, self.used, self.where = raw, set(), where

    def fail(self, field: str | None, reason: str, expected: str | None = None, got: Any = ...) -> DataError:
        loc = Location(self.where.path, self.where.line, self.where.row, field)
        got_text = None if got is ... else f"{type(got).__name__} {short_repr(got)}"
        return DataError(reason, loc, expected, got_text)

    def has(self, field: str) -> bool:
        return self.raw.get(field) is not None

    def get(self, field: str, required: bool = True) -> Any:
        if field not in self.raw or self.raw[field] is None:
            if required:
                raise self.fail(field, "missing field", f"field '{field}'")
            self.used.add(field)
            return None
        self.used.add(field)
        return self.raw[field]

    def text(self, field: str, required: bool = True, nonempty: bool = False) -> str | None:
        value = self.get(field, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(field, "wrong type", "a string", value)
        if nonempty and not value.strip():
            raise self.fail(field, "empty text", "non-empty text", value)
        return value


def _content(row: _Row, field: str, value: Any) -> str:
    """Message content: a string, or OpenAI content parts whose text parts are joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        texts = [p.get("text") for p in value if p.get("type", "text") == "text"]
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)
    raise row.fail(field, "wrong type", "message content as a string or a list of text parts", value)


def _messages(
    row: _Row,
    field: str,
    value: Any,
    role_key="role",
    content_key="content",
    role_map: dict[str, str] | None = None,
) -> list[dict]:
    if not isinstance(value, list):
        raise row.fail(field, "wrong type", f"a list of {{{role_key}, {content_key}}} messages", value)
    out = []
    for i, m in enumerate(value):
        path = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise row.fail(path, "wrong type", "a message object", m)
        role = m.get(role_key)
        if role_map is not None:
            role = role_map.get(role.lower() if isinstance(role, str) else role)
        if role not in S.ROLES:
            valid = sorted(role_map) if role_map else list(S.ROLES)
            raise row.fail(f"{path}.{role_key}", "unknown role", f"one of {valid}", m.get(role_key))
        if content_key not in m or m[content_key] is None:
            raise row.fail(f"{path}.{content_key}", "missing field", f"field '{content_key}'")
        out.append({"role": role, "content": _content(row, f"{path}.{content_key}", m[content_key])})
    return out


def _check_conversation(row: _Row, field: str, messages: list[dict], need_response: bool) -> list[dict]:
    if not messages:
        raise row.fail(field, "empty conversation", "at least one message", messages)
    if not any(m["role"] == "user" for m in messages):
        raise row.fail(field, "no user turn", "at least one message with role 'user'", messages)
    if need_response and messages[-1]["role"] != "assistant":
        raise row.fail(
            field, "no response", "the conversation to end with an assistant message", messages[-1]["role"]
        )
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and not m["content"].strip():
            raise row.fail(
                f"{field}[{i}].content", "empty response", "non-empty assistant text", m["content"]
            )
    return messages


# ----------------------------------------------------------------------------- readers (raw -> canonical)


def _from_messages(row: _Row) -> dict:
    msgs = _messages(row, "messages", row.get("messages"))
    return {S.MESSAGES: _check_conversation(row, "messages", msgs, need_response=False)}


def _from_sharegpt(row: _Row) -> dict:
    msgs = _messages(row, "conversations", row.get("conversations"), "from", "value", SHAREGPT_ROLES)
    system = row.text("system", required=False)
    if system and not (msgs and msgs[0]["role"] == "system"):
        msgs.insert(0, {"role": "system", "content": system})
    return {S.MESSAGES: _check_conversation(row, "conversations", msgs, need_response=False)}


def _alpaca_turns(row: _Row) -> list[dict]:
    msgs = []
    system = row.text("system", required=False)
    if system:
        msgs.append({"role": "system", "content": system})
    history = row.get("history", required=False) or []
    if not isinstance(history, list):
        raise row.fail("history", "wrong type", "a list of [instruction, response] pairs", history)
    for i, pair in enumerate(history):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise row.fail(f"history[{i}]", "wrong type", "an [instruction, response] pair of strings", pair)
        msgs += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    instruction = row.text("instruction", nonempty=True)
    extra = row.text("input", required=False)
    user = f"{instruction}{ALPACA_JOIN}{extra}" if extra and extra.strip() else instruction
    msgs.append({"role": "user", "content": user})
    return msgs


def _from_alpaca(row: _Row) -> dict:
    msgs = _alpaca_turns(row)
    output = row.text("output")
    if not output.strip():
        raise row.fail("output", "empty response", "non-empty response text", output)
    msgs.append({"role": "assistant", "content": output})
    return {S.MESSAGES: _check_conversation(row, "output", msgs, need_response=True)}


def _from_instructions(row: _Row) -> dict:
    return {S.MESSAGES: _alpaca_turns(row)}


def _side(row: _Row, field: str, role: str) -> list[dict]:
    value = row.get(field)
    if isinstance(value, str):
        if role == "assistant" and not value.strip():
            raise row.fail(field, "empty response", "non-empty text", value)
        return [{"role": role, "content": value}]
    return _messages(row, field, value)


def _from_prompt_completion(row: _Row) -> dict:
    prompt = _side(row, "prompt", "user")
    completion = _side(row, "completion", "assistant")
    msgs = prompt + completion
    return {S.MESSAGES: _check_conversation(row, "completion", msgs, need_response=True)}


def _parse_hh(row: _Row, field: str, text: str) -> list[dict]:
    parts = HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise row.fail(field, "not an HH-RLHF transcript", "'\\n\\nHuman: ... \\n\\nAssistant: ...'", text)
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1]} for i in range(1, len(parts), 2)]


def _from_preference(row: _Row) -> dict:
    if row.has("prompt"):
        prompt = _side(row, "prompt", "user")
        chosen, rejected = _side(row, "chosen", "assistant"), _side(row, "rejected", "assistant")
    else:
        # Implicit prompt (TRL) or HH-RLHF transcripts: the shared leading turns are the prompt.
        sides = []
        for field in ("chosen", "rejected"):
            value = row.get(field)
            sides.append(
                _parse_hh(row, field, value) if isinstance(value, str) else _messages(row, field, value)
            )
        n = 0
        while n < min(map(len, sides)) - 1 and sides[0][n] == sides[1][n]:
            n += 1
        prompt, chosen, rejected = sides[0][:n], sides[0][n:], sides[1][n:]
        if not prompt:
            raise row.fail("chosen", "no shared prompt", "chosen and rejected to start with the same turns")
    _check_conversation(row, "prompt", prompt, need_response=False)
    for field, side in (("chosen", chosen), ("rejected", rejected)):
        if not side or side[-1]["role"] != "assistant":
            raise row.fail(field, "no response", "an assistant message", side)
        if not side[-1]["content"].strip():
            raise row.fail(field, "empty response", "non-empty assistant text", side[-1]["content"])
    return {S.PROMPT: prompt, S.CHOSEN: chosen, S.REJECTED: rejected}


def _from_pairwise(row: _Row) -> dict:
    """AlpacaEval annotations: two outputs to one instruction and a judge's preference (1 or 2) -> a
    preference row with the preferred output as chosen. A tie or no preference is not a pair."""
    instruction = row.text("instruction", nonempty=True)
    first, second = row.text("output_1"), row.text("output_2")
    pref = row.get("preference", required=False)
    if isinstance(pref, bool) or not isinstance(pref, int | float) or float(pref) not in (1.0, 2.0):
        raise row.fail("preference", "no preference", "1 or 2 (which output the judge preferred)", pref)
    chosen, rejected = (first, second) if float(pref) == 1.0 else (second, first)
    for field, text in (("output_1", first), ("output_2", second)):
        if not text.strip():
            raise row.fail(field, "empty response", "non-empty text", text)
    return {
        S.PROMPT: [{"role": "user", "content": instruction}],
        S.CHOSEN: [{"role": "assistant", "content": chosen}],
        S.REJECTED: [{"role": "assistant", "content": rejected}],
    }


LETTERS = "ABCDEFGHIJ"
MC_ANSWER = "Answer: {letter}"  # the assistant turn of a multiple-choice row (RobustFT's answer line)


def mc_question(question: str, options: list[str]) -> str:
    """A multiple-choice question as the user asks it: the question, then one lettered option a line."""
    return question.strip() + "\n\n" + "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def _from_multiple_choice(row: _Row) -> dict:
    """MMLU (``choices`` a list, ``answer`` its index or letter) or ARC (``choices`` {text, label},
    ``answerKey``) -> the lettered question, answered "Answer: <letter>"; the letter is kept in
    ``answer`` so ops and evaluators can read it (``answer_field: answer``)."""
    question = row.text("question", nonempty=True)
    choices = row.get("choices")
    if isinstance(choices, dict):
        options, labels = choices.get("text"), choices.get("label")
    else:
        options, labels = choices, None
    if not (
        isinstance(options, list)
        and 2 <= len(options) <= len(LETTERS)
        and all(isinstance(o, str | int | float) and not isinstance(o, bool) for o in options)
    ):
        raise row.fail("choices", "wrong type", f"a list of 2 to {len(LETTERS)} option texts", choices)
    options = [str(o) for o in options]
    field = "answerKey" if row.has("answerKey") else "answer"
    given = row.get(field)
    letters = LETTERS[: len(options)]
    if isinstance(given, int) and not isinstance(given, bool) and 0 <= given < len(options):
        letter = letters[given]
    elif isinstance(given, str) and given.strip().isdigit() and labels is None:
        if not 0 <= int(given) < len(options):
            raise row.fail(field, "out of range", f"an option index 0..{len(options) - 1}", given)
        letter = letters[int(given)]
    elif isinstance(given, str) and labels is not None and given.strip() in [str(x) for x in labels]:
        letter = letters[[str(x) for x in labels].index(given.strip())]
    elif isinstance(given, str) and given.strip().upper() in letters and len(given.strip()) == 1:
        letter = given.strip().upper()
    else:
        raise row.fail(
            field, "not an option", f"an option index 0..{len(options) - 1} or letter {letters}", given
        )
    row.used.add("answer")
    return {
        S.MESSAGES: [
            {"role": "user", "content": mc_question(question, options)},
            {"role": "assistant", "content": MC_ANSWER.format(letter=letter)},
        ],
        "answer": letter,
    }


def _to_unwritable(row: dict) -> dict:
    raise DataError(
        "pairwise annotations and multiple-choice sets are read only: write the rows as preference or "
        "messages"
    )


# ----------------------------------------------------------------------------- writers (canonical -> raw)


def _split_last(row: dict, fmt: str) -> tuple[list[dict], dict | None]:
    msgs = row.get(S.MESSAGES)
    if msgs is None and row.get(S.CHOSEN) is not None:
        msgs = list(row[S.PROMPT]) + list(row[S.CHOSEN])  # preference -> SFT takes the chosen side
    if not msgs:
        raise DataError(f"row {row.get(S.ID)!r} has no conversation to write as {fmt}")
    if msgs[-1]["role"] == "assistant":
        return list(msgs[:-1]), msgs[-1]
    return list(msgs), None


def _to_messages(row: dict) -> dict:
    if row.get(S.MESSAGES):
        return {"messages": row[S.MESSAGES]}
    context, last = _split_last(row, "messages")
    return {"messages": [*context, last] if last else context}


def _to_sharegpt(row: dict) -> dict:
    msgs = list(_to_messages(row)["messages"])
    out: dict = {}
    if msgs and msgs[0]["role"] == "system":
        out["system"] = msgs.pop(0)["content"]
    out["conversations"] = [{"from": ROLE_TO_SHAREGPT[m["role"]], "value": m["content"]} for m in msgs]
    return out


def _to_alpaca(row: dict) -> dict:
    context, last = _split_last(row, "alpaca")
    out: dict = {}
    if context and context[0]["role"] == "system":
        out["system"] = context.pop(0)["content"]
    if not context or context[-1]["role"] != "user":
        raise DataError(
            f"row {row.get(S.ID)!r} cannot be written as alpaca: the last prompt turn is not a user turn"
        )
    instruction = context.pop()["content"]
    history = []
    for i in range(0, len(context) - 1, 2):
        u, a = context[i], context[i + 1]
        if (u["role"], a["role"]) != ("user", "assistant"):
            raise DataError(
                f"row {row.get(S.ID)!r} cannot be written as alpaca: turns do not alternate user/assistant"
            )
        history.append([u["content"], a["content"]])
    if len(context) % 2:
        raise DataError(f"row {row.get(S.ID)!r} cannot be written as alpaca: turns do not alternate")
    out.update(instruction=instruction, input="", output=last["content"] if last else "")
    if history:
        out["history"] = history
    return out


def _to_alpaca_eval(row: dict) -> dict:
    out = _to_alpaca(row)
    if "history" in out or "system" in out:
        raise DataError(
            f"row {row.get(S.ID)!r} is multi-turn or has a system prompt: AlpacaEval holds one turn"
        )
    return {"instruction": out["instruction"], "output": out["output"]}


def _to_instructions(row: dict) -> dict:
    out = _to_alpaca(row)
    out.pop("output")
    return out


def _to_prompt_completion(row: dict) -> dict:
    context, last = _split_last(row, "prompt_completion")
    if last is None:
        raise DataError(f"row {row.get(S.ID)!r} has no response to write as a completion")
    return {"prompt": [dict(m) for m in context], "completion": [dict(last)]}


def _to_preference(row: dict) -> dict:
    if row.get(S.CHOSEN) is None:
        raise DataError(
            f"row {row.get(S.ID)!r} is an SFT conversation: the preference format needs chosen and "
            "rejected responses"
        )
    return {k: [dict(m) for m in row[k]] for k in S.PREFERENCE_COLUMNS}


class Format:
    """A named format: which fields identify it, and how rows convert in each direction."""

    def __init__(
        self,
        name: str,
        fields: tuple[str, ...],
        read: Callable[[_Row], dict],
        write: Callable[[dict], dict],
        doc: str,
    ):
        self.name, self.fields, self.read, self.write, self.doc = name, fields, read, write, doc


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format(
            "messages", ("messages",), _from_messages, _to_messages, "OpenAI chat: messages=[{role, content}]"
        ),
        Format(
            "sharegpt",
            ("conversations",),
            _from_sharegpt,
            _to_sharegpt,
            "ShareGPT: conversations=[{from, value}], optional system",
        ),
        Format(
            "preference",
            ("chosen", "rejected"),
            _from_preference,
            _to_preference,
            "prompt/chosen/rejected (TRL), strings or messages; implicit prompt and HH-RLHF transcripts too",
        ),
        Format(
            "prompt_completion",
            ("prompt", "completion"),
            _from_prompt_completion,
            _to_prompt_completion,
            "prompt/completion, strings or messages",
        ),
        Format(
            "pairwise",
            ("instruction", "output_1", "output_2", "preference"),
            _from_pairwise,
            _to_unwritable,
            "AlpacaEval annotations: instruction, output_1, output_2, preference (1 or 2) -> preference rows",
        ),
        Format(
            "multiple_choice",
            ("question", "choices"),
            _from_multiple_choice,
            _to_unwritable,
            "multiple choice (MMLU, ARC): question, choices, answer (index or letter) or answerKey "
            "-> a lettered question answered 'Answer: <letter>', the letter kept in `answer`",
        ),
        Format(
            "alpaca_eval",
            ("instruction", "output", "generator"),
            _from_alpaca,
            _to_alpaca_eval,
            "AlpacaEval model outputs: instruction, output, generator",
        ),
        Format(
            "alpaca",
            ("instruction", "output"),
            _from_alpaca,
            _to_alpaca,
            "Alpaca: instruction, input, output; optional system and history",
        ),
        Format(
            "instructions",
            ("instruction",),
            _from_instructions,
            _to_instructions,
            "prompt-only seeds: instruction (and input), no response",
        ),
    ]
}
WRITE_FORMATS = ("messages", "sharegpt", "alpaca", "preference", "prompt_completion", "alpaca_eval")


def detect(keys: Iterable[str]) -> str | None:
    """The format whose identifying fields are all present (first match in FORMATS order), or None."""
    present = set(keys)
    for fmt in FORMATS.values():
        if set(fmt.fields) <= present and not (fmt.name == "alpaca_eval" and "input" in present):
            return fmt.name
    return None


def undetectable(keys: Iterable[str], where: Location) -> DataError:
    options = "; ".join(f"{f.name} ({', '.join(f.fields)})" for f in FORMATS.values())
    return DataError(
        "cannot detect the format", where, f"the fields of one of: {options}", f"fields {sorted(keys)}"
    )


def to_canonical(raw: Any, fmt: str, where: Location) -> dict:
    """One raw row -> a canonical row: the format's columns, id, lineage (when given) and extra fields."""
    if not isinstance(raw, dict):
        raise DataError(
            "wrong type", where, "a JSON object per row", f"{type(raw).__name__} {short_repr(raw)}"
        )
    row = _Row(raw, where)
    out = FORMATS[fmt].read(row)
    given_id = raw.get(S.ID)
    if given_id is not None:
        if not isinstance(given_id, str | int) or isinstance(given_id, bool):
            raise row.fail(S.ID, "wrong type", "a string or integer id", given_id)
        out[S.ID] = str(given_id)
    row.used.add(S.ID)
    for key, value in raw.items():
        if key not in row.used and key not in out:
            out[key] = value
    return out


def from_canonical(row: dict, fmt: str, keep_columns: bool = True) -> dict:
    """A canonical row written in `fmt`; with keep_columns, id, scores, tags and lineage ride along."""
    if fmt not in FORMATS:
        raise DataError(f"unknown output format '{fmt}'", expected=f"one of {list(WRITE_FORMATS)}")
    out = FORMATS[fmt].write(row)
    if keep_columns:
        for key, value in row.items():
            if key not in out and key not in (S.MESSAGES, *S.PREFERENCE_COLUMNS):
                out[key] = value
    return out
