"""The canonical columns every op reads and writes (DESIGN.md section 3).

A row is either an SFT conversation (``messages``) or a preference pair (``prompt``, ``chosen``,
``rejected``, TRL's conversational format). The engine adds ``id`` and the lineage columns.
"""

from __future__ import annotations

import re

import pyarrow as pa
import xxhash

ROLES = ("system", "user", "assistant", "tool")

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
CONVERSATION_TYPE = pa.list_(MESSAGE_TYPE)

ID = "id"
MESSAGES = "messages"
PROMPT, CHOSEN, REJECTED = "prompt", "chosen", "rejected"
ORIGIN, PARENTS, OPS, ITERATION = "origin", "parents", "ops", "iteration"

LINEAGE_COLUMNS = (ORIGIN, PARENTS, OPS, ITERATION)
PREFERENCE_COLUMNS = (PROMPT, CHOSEN, REJECTED)
# Columns the engine owns: ops may read them but never rename or drop them.
PROTECTED_COLUMNS = frozenset((ID, *LINEAGE_COLUMNS))

LINEAGE_FIELDS = [
    pa.field(ORIGIN, pa.string()),
    pa.field(PARENTS, pa.list_(pa.string())),
    pa.field(OPS, pa.list_(pa.string())),
    pa.field(ITERATION, pa.int32()),
]

KNOWN_TYPES: dict[str, pa.DataType] = {
    ID: pa.string(),
    MESSAGES: CONVERSATION_TYPE,
    PROMPT: CONVERSATION_TYPE,
    CHOSEN: CONVERSATION_TYPE,
    REJECTED: CONVERSATION_TYPE,
    **{f.name: f.type for f in LINEAGE_FIELDS},
}


def empty_schema(preference: bool = False) -> pa.Schema:
    """The columns every canonical table has: id, the content, and lineage."""
    content = PREFERENCE_COLUMNS if preference else (MESSAGES,)
    return pa.schema(
        [pa.field(ID, pa.string()), *(pa.field(c, CONVERSATION_TYPE) for c in content), *LINEAGE_FIELDS]
    )


# ASCII whitespace runs collapse to one space (the vectorized reader applies the same rule with RE2).
WHITESPACE = re.compile(r"[ \t\n\r\f\v]+")
WHITESPACE_RE2 = r"[ \t\n\r\f\v]+"
TURN_SEP, ROLE_SEP, SIDE_SEP = "\x1e", "\x1f", "\x1d"


def norm_text(text: str) -> str:
    return WHITESPACE.sub(" ", text).strip(" ")


def hash_text(text: str) -> str:
    return xxhash.xxh3_64_hexdigest(text.encode("utf-8", "surrogatepass"))


def unique_id(base: str, seen: set) -> str:
    """`base`, or `base-2`, `base-3` ... for repeats, so ids stay unique and stable."""
    rid, n = base, 1
    while rid in seen:
        n += 1
        rid = f"{base}-{n}"
    seen.add(rid)
    return rid


def content_id(row: dict) -> str:
    """A stable id from the normalized content of a canonical row (16 hex characters).

    Whitespace runs inside and around each turn never change what a sample means, so they are collapsed
    before hashing. Roles and turn boundaries are part of the content.
    """
    if row.get(MESSAGES) is not None:
        parts = [_turns(row[MESSAGES])]
    else:
        parts = [_turns(row.get(PROMPT)), _turns(row.get(CHOSEN)), _turns(row.get(REJECTED))]
    return hash_text(SIDE_SEP.join(parts))


def _turns(messages: list[dict] | None) -> str:
    if not messages:
        return ""
    return TURN_SEP.join(f"{m['role']}{ROLE_SEP}{norm_text(m['content'])}" for m in messages)


def order_columns(table: pa.Table) -> pa.Table:
    """id and content first, then extra columns, then lineage: one column order for every reader."""
    names = table.column_names
    head = [c for c in (ID, MESSAGES, *PREFERENCE_COLUMNS) if c in names]
    tail = [c for c in LINEAGE_COLUMNS if c in names]
    middle = [c for c in names if c not in head and c not in tail]
    order = head + middle + tail
    return table if order == names else table.select(order)


def conversation_text(messages: list[dict] | None, roles: tuple[str, ...] = ROLES) -> str:
    """The contents of the given roles joined by blank lines (for hashing, stats and display)."""
    if not messages:
        return ""
    return "\n\n".join(m["content"] for m in messages if m["role"] in roles)


def prompt_text(messages: list[dict] | None) -> str:
    """What a conversation asks, as one text: its turns before the final answer, system turns left out."""
    return conversation_text(prompt_of(messages or []), tuple(r for r in ROLES if r != "system"))


def last_turn(messages: list[dict], role: str) -> str | None:
    """The content of the last message with this role, or None."""
    for m in reversed(messages or []):
        if m["role"] == role:
            return m["content"]
    return None


TEXT_FIELDS = ("instruction", "response", "conversation")


def text_of(messages: list[dict] | None, field: str) -> str:
    """The text an op looks at: the last user turn, the last assistant turn, or the whole conversation."""
    if field == "instruction":
        return last_turn(messages, "user") or ""
    if field == "response":
        return last_turn(messages, "assistant") or ""
    if field == "conversation":
        return conversation_text(messages)
    raise ValueError(f"unknown text field '{field}'; valid: {', '.join(TEXT_FIELDS)}")


def prompt_of(messages: list[dict]) -> list[dict]:
    """The conversation up to (not including) its final assistant turn."""
    if messages and messages[-1]["role"] == "assistant":
        return list(messages[:-1])
    return list(messages)


def put_column(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    """The table with column ``name`` set to ``values``: replaced where it exists, else appended."""
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, values) if i >= 0 else table.append_column(name, values)
