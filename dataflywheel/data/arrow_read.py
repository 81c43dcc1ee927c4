"""The vectorized reader: JSON lines or Parquet straight into canonical Arrow tables, no Python per row.

It covers the common large-data case (Alpaca-style and OpenAI ``messages`` rows that are all valid).
Anything it is not sure about raises :class:`NotFast` before a single row of that block is emitted, and
the caller reads the rest of the file with the row-by-row reader, which produces the exact error or drop
for each bad row. Both readers give the same ids, columns and values; a test holds them to it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataflywheel.data import schema as S

FAST_FORMATS = ("alpaca", "alpaca_eval", "instructions", "messages")
ALPACA_FIELDS = {"instruction", "input", "output"}
# Fields whose presence needs the row-by-row reader's checks (multi-turn Alpaca, given lineage).
SLOW_FIELDS = {"system", "history", *S.LINEAGE_COLUMNS}
BLOCK_BYTES = 1 << 22


class NotFast(Exception):
    """This block needs the row-by-row reader."""


def supported(kind: str, fmt: str) -> bool:
    return kind in ("jsonl", "parquet") and fmt in FAST_FORMATS


def record_batches(path: str, kind: str) -> Iterator[pa.RecordBatch]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(path).iter_batches(batch_size=65_536)
        return
    yield from _jsonl_batches(path)


def _jsonl_batches(path: str) -> Iterator[pa.RecordBatch]:
    """JSON lines parsed a block of whole lines at a time. Each block must give exactly one record per
    non-blank line: Arrow's parser would read two objects written on one line as two rows, where the row
    reader (rightly) calls that line malformed, so such a block goes to the row reader."""
    import pyarrow.json as pj

    options = pj.ParseOptions(newlines_in_values=False)
    stream = pa.input_stream(path, compression="detect")
    carry = b""
    try:
        while True:
            try:
                chunk = stream.read(BLOCK_BYTES)
            except (
                OSError
            ) as e:  # damaged compressed data: the row reader says where, keeping what came before
                raise NotFast(str(e)) from None
            data = carry + chunk
            if not data:
                return
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            if cut == 0:
                carry = data  # a line longer than a block: read on
                continue
            block, carry = data[:cut], data[cut:]
            lines = sum(1 for line in block.split(b"\n") if line.strip())
            if not lines:
                continue
            try:
                table = pj.read_json(
                    pa.BufferReader(block),
                    read_options=pj.ReadOptions(block_size=len(block) + 1),
                    parse_options=options,
                )
                table.validate(full=True)  # Arrow's JSON parser lets invalid UTF-8 through into strings
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError) as e:
                raise NotFast(str(e)) from None
            if table.num_rows != lines:
                raise NotFast(f"{table.num_rows} JSON objects on {lines} lines")
            yield from table.to_batches()
            if not chunk:
                return
    finally:
        stream.close()


def canonical_batches(
    path: str, kind: str, fmt: str, origin: str, seen: set, fields: dict[str, str] | None = None
) -> Iterator[pa.Table]:
    """Canonical tables, one per block; raises NotFast (having emitted only whole valid blocks).
    ``fields`` renames the file's fields to the format's (format name -> file name)."""
    rename = {found: name for name, found in (fields or {}).items()}
    try:
        batches = record_batches(path, kind)
        for batch in batches:
            table = pa.Table.from_batches([batch])
            try:
                names = table.column_names
            except UnicodeDecodeError as e:  # a field name with invalid UTF-8: the row reader names the line
                raise NotFast(str(e)) from None
            if rename:
                table = table.rename_columns([rename.get(c, c) for c in names])
            if table.num_rows:
                yield canonical_table(table, fmt, origin, seen)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as e:
        raise NotFast(str(e)) from None


def canonical_table(table: pa.Table, fmt: str, origin: str, seen: set) -> pa.Table:
    names = set(table.column_names)
    if names & SLOW_FIELDS:
        raise NotFast("fields that need row-by-row checks")
    if fmt == "messages":
        messages, used = _from_messages(table), {"messages"}
    else:
        messages, used = _from_alpaca(table, with_output=fmt != "instructions"), ALPACA_FIELDS
    ids = _ids(table, messages, seen)
    n = table.num_rows
    extras = [c for c in table.column_names if c not in used and c != S.ID]
    columns = {S.ID: ids, S.MESSAGES: messages}
    columns.update({c: table.column(c) for c in extras})
    columns[S.ORIGIN] = pa.repeat(pa.scalar(origin, pa.string()), n)
    empty = pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string()))
    columns[S.PARENTS] = empty
    columns[S.OPS] = empty
    columns[S.ITERATION] = pa.array(np.zeros(n, dtype=np.int32))
    return pa.table(columns)


def _text(table: pa.Table, name: str, required: bool) -> pa.Array | None:
    if name not in table.column_names:
        if required:
            raise NotFast(f"missing {name}")
        return None
    col = table.column(name).combine_chunks()
    if pa.types.is_null(col.type) and not required:
        return None
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise NotFast(f"{name} is not text")
    col = col.cast(pa.string())
    if required and col.null_count:
        raise NotFast(f"{name} has nulls")
    return col


def _blank(col: pa.Array) -> pa.Array:
    return pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0)


def _from_alpaca(table: pa.Table, with_output: bool) -> pa.Array:
    instruction = _text(table, "instruction", True)
    if pc.any(_blank(instruction)).as_py():
        raise NotFast("empty instruction")
    extra = _text(table, "input", False)
    user = instruction
    if extra is not None:
        has = pc.fill_null(pc.invert(_blank(extra)), False)
        joined = pc.binary_join_element_wise(instruction, extra, "\n\n")
        user = pc.if_else(has, joined, instruction)
    n = table.num_rows
    if not with_output:
        contents, roles, per_row = user, ["user"], 1
    else:
        output = _text(table, "output", True)
        if pc.any(_blank(output)).as_py():
            raise NotFast("empty response")
        order = np.empty(2 * n, dtype=np.int64)
        order[0::2], order[1::2] = np.arange(n), np.arange(n, 2 * n)
        contents = pa.concat_arrays([user, output]).take(pa.array(order))
        roles, per_row = ["user", "assistant"], 2
    role = pa.DictionaryArray.from_arrays(
        pa.array(np.tile(np.arange(per_row, dtype=np.int8), n)), pa.array(roles)
    ).cast(pa.string())
    structs = pa.StructArray.from_arrays([role, contents], fields=list(S.MESSAGE_TYPE))
    offsets = pa.array(np.arange(0, per_row * n + 1, per_row, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, structs, type=S.CONVERSATION_TYPE)


def _from_messages(table: pa.Table) -> pa.Array:
    col = table.column("messages").combine_chunks()
    if not pa.types.is_list(col.type) or not pa.types.is_struct(col.type.value_type):
        raise NotFast("messages is not a list of objects")
    if col.null_count:
        raise NotFast("null messages")
    col = col.cast(pa.list_(col.type.value_type))  # plain offsets from 0
    item = col.type.value_type
    if item.get_field_index("role") < 0 or item.get_field_index("content") < 0:
        raise NotFast("messages without role/content")
    flat = col.flatten()
    role, content = flat.field("role"), flat.field("content")
    if not all(pa.types.is_string(a.type) for a in (role, content)) or role.null_count or content.null_count:
        raise NotFast("role/content not text")
    if not pc.all(pc.is_in(role, pa.array(S.ROLES))).as_py():
        raise NotFast("unknown role")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if (lengths == 0).any():
        raise NotFast("empty conversation")
    parents = pc.list_parent_indices(col).to_numpy()
    is_user = pc.equal(role, "user").to_numpy(zero_copy_only=False)
    if (np.bincount(parents[is_user], minlength=len(col)) == 0).any():
        raise NotFast("no user turn")
    if pc.any(pc.and_(pc.equal(role, "assistant"), _blank(content))).as_py():
        raise NotFast("empty response")
    structs = pa.StructArray.from_arrays([role, content], fields=list(S.MESSAGE_TYPE))
    return pa.ListArray.from_arrays(col.offsets, structs, type=S.CONVERSATION_TYPE)


def _ids(table: pa.Table, messages: pa.Array, seen: set) -> pa.Array:
    given = None
    if S.ID in table.column_names:
        col = table.column(S.ID).combine_chunks()
        if (
            pa.types.is_integer(col.type)
            or pa.types.is_string(col.type)
            or pa.types.is_large_string(col.type)
        ):
            given = col.cast(pa.string()).to_pylist()
        elif not pa.types.is_null(col.type):
            raise NotFast("id of another type")
    flat = messages.flatten()
    norm = pc.utf8_trim(pc.replace_substring_regex(flat.field("content"), S.WHITESPACE_RE2, " "), " ")
    turns = pc.binary_join_element_wise(flat.field("role"), norm, S.ROLE_SEP)
    joined = pc.binary_join(pa.ListArray.from_arrays(messages.offsets, turns), S.TURN_SEP)
    texts = joined.to_pylist()
    # Work on a copy of the seen ids: a block that turns out to need the slow reader must leave no trace.
    local = set(seen)
    ids = []
    for i, text in enumerate(texts):
        g = given[i] if given is not None else None
        if g is not None:
            if g in local:
                raise NotFast("duplicate id")
            local.add(g)
            ids.append(g)
        else:
            ids.append(S.unique_id(S.hash_text(text), local))
    seen.update(ids)
    return pa.array(ids, pa.string())
