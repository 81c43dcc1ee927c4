"""Path settings as users write them (the ground floor: recipes and ops both expand paths this way)."""

from __future__ import annotations

import os
import re

_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


def expand_path(value: str) -> str:
    """Expand ``~``, ``$VAR``, ``${VAR}`` and ``${VAR:-default}`` (data paths often live in a variable)."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        if name in os.environ:
            return os.environ[name]
        if m.group(2) is not None:
            return m.group(2)
        return m.group(0)

    return os.path.expanduser(_VAR.sub(sub, value))


def unset_variables(value: str) -> list[str]:
    """The variables a path names that are not set and have no default (``${VAR:-x}`` has one)."""
    return [
        m.group(1) or m.group(3)
        for m in _VAR.finditer(value)
        if m.group(2) is None and (m.group(1) or m.group(3)) not in os.environ
    ]
