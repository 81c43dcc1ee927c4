"""The text a selection op looks at, taken from canonical rows as one Arrow string array."""

from __future__ import annotations

import pyarrow as pa

from dataflywheel.data import schema as S

FIELDS = ("instruction", "response", "conversation")


def texts(table: pa.Table, field: str) -> list[str]:
    """Per row: the last user turn, the last assistant turn, or the whole conversation.

    Preference rows use the prompt and the chosen side.
    """
    if S.MESSAGES in table.column_names:
        convs = table.column(S.MESSAGES).to_pylist()
    else:
        prompts, chosen = table.column(S.PROMPT).to_pylist(), table.column(S.CHOSEN).to_pylist()
        convs = [p + c for p, c in zip(prompts, chosen, strict=True)]
    return [S.text_of(c, field) for c in convs]
