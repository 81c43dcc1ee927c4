"""The arrows point one way (DESIGN.md section 2): no module imports from a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "dataflywheel"

# Lower number = lower layer. A module may import its own layer and the layers below it.
LAYERS = {
    "errors": 0,
    "hashing": 0,
    "paths": 0,
    "__init__": 0,
    "lib": 1,
    "data": 1,
    "models": 1,
    "train": 1,
    "evaluate": 1,
    "ops": 2,
    "serve": 2,
    "recipe": 3,
    "engine": 3,
    "report": 4,
    "experiments": 4,
    "cli": 5,
}


def layer_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return top, LAYERS[top]


def imports(path: Path) -> list[tuple[str, int]]:
    """Every dataflywheel module a file imports (at any depth: lazy imports count too), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = (
                [node.module]
                if node.module != "dataflywheel"
                else [f"dataflywheel.{a.name}" for a in node.names]
            )
            out += [(n, node.lineno) for n in names if n.startswith("dataflywheel")]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("dataflywheel")]
    return out


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts)


def test_every_top_level_module_has_a_layer():
    tops = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    assert tops <= set(LAYERS), f"give these a layer in this test: {sorted(tops - set(LAYERS))}"


def test_no_import_points_up():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here, rank = layer_of(module_name(path))
        for target, line in imports(path):
            there, target_rank = layer_of(target)
            if target_rank > rank:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {target} ({there})")
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)
