"""Structured generation: the shape a reply must take, enforced while decoding where the backend can.

A :class:`Constraint` is one of a JSON schema, a regular expression, a list of choices, an EBNF grammar
(GBNF, as llama.cpp writes it, or Lark), or parts: text, short patterns and free text bounded in tokens,
the shape of a reply that reasons freely and then gives what a parser reads. It rides on
:class:`~dataflywheel.models.base.Sampling`, so it is part of the call-cache key, and it is checked when
it is built: a bad schema or regex is an error before any model call. Each backend enforces it its own
way: the hf backend and ``flywheel serve`` mask the logits of every token the grammar does not allow
(llguidance, one matcher per row), vLLM takes its structured-output parameters, an OpenAI-compatible
server gets ``response_format`` or the extra request fields its kind accepts
(``ModelSpec.structured_outputs``; parts go to servers as one regex). A backend that cannot enforce a
constraint gets the plain request; the model counts it (``Usage.unconstrained``), and the op's parser
still decides.

Regular expressions use the syntax the decoding engines share (Rust's ``regex`` crate, which xgrammar,
llguidance and Outlines read alike): no look-around, no backreferences.
"""

from __future__ import annotations

import itertools
import json
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dataflywheel.errors import FlywheelError

KINDS = ("json_schema", "regex", "choice", "grammar", "parts")
# Where a server bounds free text in characters (a regex) rather than tokens: characters per token allowed
CHARS_PER_TOKEN = 2


class ConstraintError(FlywheelError):
    """A constraint that cannot be compiled (bad schema, regex or grammar), or one a model must enforce
    and cannot."""


def _llguidance():
    try:
        import llguidance
    except ImportError:  # a core dependency; a broken install says what to do
        raise ConstraintError("structured generation needs llguidance: pip install llguidance") from None
    return llguidance


class Part(BaseModel):
    """One piece of a reply made of pieces (``Constraint.parts``): fixed text, a short pattern, or free
    text drawn from a character class and bounded in tokens: a judge's reasoning before its verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str | None = Field(None, description="literal text")
    regex: str | None = Field(None, description="a short pattern (a verdict, a number)")
    free: str | None = Field(None, description="free text: a character class such as [^\\n]")
    max_tokens: int | None = Field(None, ge=1, description="free: at most this many tokens")
    min_chars: int = Field(0, ge=0, le=1, description="free: at least one character (1) or none (0)")
    optional: bool = Field(False, description="text or regex: the piece may be left out")

    @model_validator(mode="after")
    def _one(self) -> Part:
        given = [k for k in ("text", "regex", "free") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a part is exactly one of text, regex, free; got {', '.join(given) or 'none'}")
        if (self.free is None) == (self.max_tokens is not None):
            raise ValueError("max_tokens goes with free text, and free text needs it")
        if self.free is not None and self.optional:
            raise ValueError("free text is optional already (min_chars: 0)")
        if self.text == "":
            raise ValueError("text is empty")
        return self

    def regex_form(self) -> str:
        if self.text is not None:
            body = escape(self.text)
        elif self.regex is not None:
            body = f"(?:{self.regex})"
        else:
            return f"{self.free}{{{self.min_chars},{self.max_tokens * CHARS_PER_TOKEN}}}"
        return f"(?:{body})?" if self.optional else body

    def lark_rule(self, name: str) -> str:
        if self.text is not None:
            return f"{name}: {json.dumps(self.text)}"
        if self.regex is not None:
            return f"{name}: /{_slash(self.regex)}/"
        return f"{name}[max_tokens={self.max_tokens}]: /{_slash(self.free)}{'+' if self.min_chars else '*'}/"


def _slash(regex: str) -> str:
    return regex.replace("/", "\\/")


class Constraint(BaseModel):
    """The shape a reply must take: exactly one of ``json_schema``, ``regex``, ``choice``, ``grammar``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    json_schema: dict[str, Any] | None = Field(None, description="a JSON schema the reply must satisfy")
    regex: str | None = Field(None, description="a regular expression the whole reply must match")
    choice: list[str] | None = Field(None, description="the reply is exactly one of these strings")
    grammar: str | None = Field(None, description="an EBNF grammar (GBNF or Lark) the reply must follow")
    parts: list[Part] | None = Field(
        None,
        description="pieces in order (text, short patterns, free text bounded in tokens): llguidance bounds "
        "free text in tokens, so the pieces after it always fit; servers get the regex (bounded in chars)",
    )
    required: bool = Field(
        False, description="fail the request rather than send it unconstrained to a model that cannot enforce"
    )

    @model_validator(mode="after")
    def _one_and_valid(self) -> Constraint:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a constraint takes exactly one of {', '.join(KINDS)}; got {', '.join(given) or 'none'}"
            )
        if self.choice is not None and (not self.choice or not all(c for c in self.choice)):
            raise ValueError("choice needs at least one non-empty string")
        if self.parts is not None:
            _check_parts(self.parts)
        problem = _check(self.kind, self.text)
        if problem:
            raise ValueError(f"invalid {self.kind}: {problem}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def text(self) -> str:
        """The constraint as one string (schemas and choice lists as JSON; parts as their lark grammar)."""
        if self.parts is not None:
            return self.lark()
        value = getattr(self, self.kind)
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    def llguidance_grammar(self) -> str:
        return _grammar(self.kind, self.text)

    def lark(self) -> str:
        """The parts as a llguidance Lark grammar (free text bounded by ``max_tokens`` per rule)."""
        names = [f"p{i}" for i in range(len(self.parts or []))]
        start = "start: " + " ".join(
            n + ("?" if p.optional else "") for n, p in zip(names, self.parts, strict=True)
        )
        return "\n".join([start, *(p.lark_rule(n) for n, p in zip(names, self.parts, strict=True))]) + "\n"

    def portable(self) -> Constraint:
        """The constraint in the kinds servers take: parts become one regex (free text bounded in
        characters, ``CHARS_PER_TOKEN`` a token)."""
        if self.parts is None:
            return self
        return Constraint(regex="".join(p.regex_form() for p in self.parts), required=self.required)

    def choice_regex(self) -> str:
        """The choices as one regular expression (for servers that take a regex but no choice list)."""
        return "(" + "|".join(escape(c) for c in self.choice or []) + ")"


# Whitespace between JSON tokens: a newline and an indent at most. JSON allows any amount, and a model
# that may write any amount (a small one, a sampled one) can spend its whole max_tokens on it.
JSON_WHITESPACE = r"[ \n\t]{0,8}"


def _check_parts(parts: list[Part]) -> None:
    """Free text must stop where the next piece starts: its class may not hold that piece's first
    character (a greedy lexer would swallow it), and parts may not be empty."""
    import re

    if not parts:
        raise ValueError("parts needs at least one part")
    for here, after in itertools.pairwise(parts):
        first = after.text[0] if after.text else None
        if here.free is None or first is None:
            continue
        try:
            swallowed = re.fullmatch(here.free, first) is not None
        except re.error:
            continue
        if swallowed:
            raise ValueError(
                f"free text {here.free} would swallow the {after.text!r} after it: leave {first!r} out of it"
            )


@lru_cache(maxsize=1024)
def _grammar(kind: str, text: str) -> str:
    ll = _llguidance()
    try:
        if kind == "parts":
            return ll.grammar_from("lark", text)
        if kind == "json_schema":
            return ll.LLMatcher.grammar_from_json_schema(
                text, defaults={"whitespace_pattern": JSON_WHITESPACE}
            )
        return ll.grammar_from(kind, text)
    except ValueError as e:
        raise ConstraintError(f"invalid {kind}: {e}") from None


@lru_cache(maxsize=1024)
def _check(kind: str, text: str) -> str:
    """What is wrong with a constraint ("" when nothing), compiled without a tokenizer."""
    try:
        grammar = _grammar(kind, text)
    except ConstraintError as e:
        return str(e).removeprefix(f"invalid {kind}: ")
    message = _llguidance().LLMatcher.validate_grammar(grammar)
    if not message or message.startswith("WARNING"):
        return ""
    # one line: llguidance's message echoes the compiled grammar with a caret under the fault
    return " ".join(message.split(" 1 | start:")[0].split())


META = set(r"\.+*?()|[]{}^$#&-~")


CONTROL = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def escape(text: str) -> str:
    """``text`` as a literal in the shared regex syntax (re.escape also escapes spaces and quotes, which
    Rust's regex refuses inside some classes); control characters as escapes, so the pattern is one line
    wherever it is written (a Lark grammar's /.../)."""
    return "".join(CONTROL.get(ch) or ("\\" + ch if ch in META else ch) for ch in text)


def ending_shape(pattern: str, free_tokens: int, avoid: str) -> Constraint:
    """Free text of at most ``free_tokens`` tokens without the character ``avoid``, then ``pattern``, which
    starts with that character: a judge reasons, then closes with its verdict, and the verdict always
    fits (``[`` for a ``[[k]]`` ending, a newline for a "\\nScore: k" line)."""
    return Constraint(
        parts=[Part(free=f"[^{escape(avoid)}]", max_tokens=max(1, free_tokens)), Part(regex=pattern)]
    )
