"""Fingerprints address each step's output: same input, op, parameters, models and code -> same folder."""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

import xxhash

import dataflywheel
from dataflywheel.hashing import digest

# Bump when the engine changes what it writes for the same op (lineage, shard layout, drop log).
ENGINE_FORMAT = 1


@cache
def code_version(obj: type | None = None) -> str:
    """Package version, engine format, and the source of everything the op runs: its module, every module
    of its package it imports (directly or not, lazy imports too), the prompt files beside them, and the
    data layer. Editing a helper such as minhash.py or a prompt template reruns the steps that use it."""
    files = module_files(obj.__module__) if obj is not None else []
    data_dir = Path(__file__).resolve().parent.parent / "data"
    files += sorted(data_dir.glob("*.py"))
    h = xxhash.xxh3_64()
    for f in sorted(set(files)):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return digest(dataflywheel.__version__, ENGINE_FORMAT, h.hexdigest())


@cache
def module_files(module: str) -> list[Path]:
    """The files of `module` and of each module of the same top-level package it imports, transitively,
    with the files in any ``prompts/`` folder beside them."""
    top = module.split(".")[0]
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _source(name)
        if path is None:
            continue
        seen[name] = path
        todo += [m for m in _imports(path, name) if m.split(".")[0] == top and m not in seen]
    files = set(seen.values())
    for path in list(files):
        prompts = path.parent / "prompts"
        if prompts.is_dir():
            files.update(f for f in prompts.rglob("*") if f.is_file())
    return sorted(files)


def _source(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, AttributeError, ValueError):
        return None  # "package.module.name" where name is not a module
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imports(path: Path, module: str) -> list[str]:
    """Module names an import statement anywhere in the file may refer to (``from a import b``: a, a.b)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            out.append(base)
            out += [f"{base}.{a.name}" for a in node.names]
    parents = {".".join(m.split(".")[:i]) for m in out for i in range(1, m.count(".") + 1)}
    return sorted(set(out) | parents)
