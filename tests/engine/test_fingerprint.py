"""A step's fingerprint covers every module its op imports and the prompt files beside them."""

from __future__ import annotations

import sys
import textwrap

import pytest

from dataflywheel.engine import fingerprint
from dataflywheel.ops import registry
from tests.engine.test_local import make_recipe, run

OP = '''
import pyarrow as pa

from dataflywheel.ops.base import Mapper
from flyext import helper


class Shout(Mapper):
    """Rewrites each answer through a helper and a prompt template."""

    reads = ("messages",)
    writes = ("messages",)

    def map(self, batch):
        from pathlib import Path

        template = (Path(__file__).parent / "prompts" / "tpl.txt").read_text().strip()
        convs = batch.column("messages").to_pylist()
        for c in convs:
            c[-1]["content"] = template + helper.transform(c[-1]["content"])
        i = batch.schema.get_field_index("messages")
        return batch.set_column(i, "messages", pa.array(convs, batch.schema.field("messages").type))
'''


@pytest.fixture
def ext(tmp_path, monkeypatch):
    pkg = tmp_path / "src" / "flyext"
    (pkg / "prompts").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "op.py").write_text(textwrap.dedent(OP))
    (pkg / "helper.py").write_text("def transform(text):\n    return text.upper()\n")
    (pkg / "unrelated.py").write_text("X = 1\n")
    (pkg / "prompts" / "tpl.txt").write_text("A: ")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.setitem(registry.REGISTRY, "test_shout", "flyext.op:Shout")
    yield pkg
    for name in [m for m in sys.modules if m.startswith("flyext")]:
        del sys.modules[name]


def rerun(tmp_path, path):
    fingerprint.code_version.cache_clear()
    fingerprint.module_files.cache_clear()
    for name in [m for m in sys.modules if m.startswith("flyext")]:
        del sys.modules[name]
    return run(path, tmp_path / "run").steps[-1].status


def test_editing_a_helper_or_a_prompt_reruns_the_step_and_nothing_else_does(tmp_path, ext):
    path = make_recipe(tmp_path, "- test_shout: {}\n", n=3)
    first = run(path, tmp_path / "run")
    assert first.steps[-1].status == "computed"
    assert rerun(tmp_path, path) == "reused"
    (ext / "unrelated.py").write_text("X = 2\n")  # not imported by the op
    assert rerun(tmp_path, path) == "reused"
    (ext / "helper.py").write_text("def transform(text):\n    return text.lower()\n")
    assert rerun(tmp_path, path) == "computed"
    (ext / "prompts" / "tpl.txt").write_text("Answer: ")
    assert rerun(tmp_path, path) == "computed"
    assert rerun(tmp_path, path) == "reused"


def test_an_ops_files_include_the_shared_helpers_it_imports():
    files = {p.name for p in fingerprint.module_files(registry.get("minhash_dedup").__module__)}
    assert {"minhash_dedup.py", "minhash.py", "base.py", "schema.py"} <= files
    files = {p.name for p in fingerprint.module_files(registry.get("alpagasus").__module__)}
    assert {"alpagasus.py", "llm.py", "parsing.py", "alpagasus_accuracy.txt"} <= files
