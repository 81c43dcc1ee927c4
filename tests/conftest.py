from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Tests never reach a model or dataset hub: fail fast instead of waiting on network timeouts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from dataflywheel.ops import registry

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("FLYWHEEL_SHARED_DATA", ROOT.parent / "shared" / "data"))

registry.register("test_upper", "tests.support_ops:UpperResponse")
registry.register("test_chars", "tests.support_ops:ResponseChars")
registry.register("test_paraphrase", "tests.support_ops:Paraphrase")
registry.register("test_ask_model", "tests.support_ops:AskModel")
registry.register("test_countdown", "tests.support_ops:Countdown")


def write_jsonl(path: Path, rows: list, raw_lines: dict[int, str] | None = None) -> Path:
    """Rows as JSON lines; raw_lines puts verbatim text at given 0-based line positions."""
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    for pos, text in sorted((raw_lines or {}).items()):
        lines.insert(pos, text)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def alpaca_rows(n: int, prefix: str = "q") -> list[dict]:
    return [
        {
            "instruction": f"{prefix} question {i}?",
            "input": "",
            "output": f"answer number {i} " + "x" * (i % 7),
        }
        for i in range(n)
    ]


def run_recipe(folder: Path, body: str, name: str = "r", run: str = "run"):
    """Write ``body`` (YAML, dedented) as ``folder/<name>.yaml``, validate it and run it locally into
    ``folder/<run>``: (result, manifest)."""
    import textwrap

    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.recipe.validate import validate_file

    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    recipe, ops, problems = validate_file(path)
    assert not problems, problems
    result = LocalExecutor(recipe, ops, folder / run, progress=False).run()
    return result, json.loads((folder / run / "manifest.json").read_text())


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set FLYWHEEL_SHARED_DATA)")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu run only where torch sees a CUDA device (the same check the library uses)."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _isolated_call_cache(tmp_path_factory):
    """Tests never read answers cached by an earlier session (the converted embedded models stay shared)."""
    old = os.environ.get("FLYWHEEL_CACHE")
    os.environ["FLYWHEEL_CACHE"] = str(tmp_path_factory.mktemp("cache") / "calls.sqlite")
    yield
    if old is None:
        os.environ.pop("FLYWHEEL_CACHE", None)
    else:
        os.environ["FLYWHEEL_CACHE"] = old


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded SmolLM2-135M-Instruct, loaded once per test session."""
    from dataflywheel.models.hf import HFBackend

    return HFBackend("embedded:smollm2-135m-instruct", device="cpu")


@pytest.fixture
def smollm2_bf16(smollm2):
    """The session's SmolLM2 decoding with a bf16 copy of its weights, on any CPU."""
    return smollm2.generating_with("bfloat16")


@pytest.fixture(scope="session")
def minilm():
    from dataflywheel.models.st import SentenceTransformersBackend

    return SentenceTransformersBackend("embedded:all-minilm-l6-v2", device="cpu")


RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A tiny random Llama (2 layers, width 32) with SmolLM2's tokenizer, saved once per session: for
    training and distillation mechanics."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from dataflywheel.models import embedded

    tok = AutoTokenizer.from_pretrained(embedded.resolve(embedded.SMOLLM2))
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def shipped_runs(tmp_path_factory):
    """Every shipped recipe run once through the CLI (the demo trains a model: share the result)."""
    from typer.testing import CliRunner

    from dataflywheel.cli import app

    runner = CliRunner()
    out = {}
    for recipe in RECIPES:
        run_dir = tmp_path_factory.mktemp(recipe.stem)
        assert runner.invoke(app, ["validate", str(recipe)]).exit_code == 0
        result = runner.invoke(app, ["run", str(recipe), "--run-dir", str(run_dir), "--quiet"])
        out[recipe.stem] = (run_dir, result)
    return out


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray instance with two CPUs (workers get this session's cache and model folders)."""
    ray = pytest.importorskip("ray")
    from dataflywheel.engine.ray_executor import init_ray

    init_ray(workers=2)
    yield ray
    ray.shutdown()
