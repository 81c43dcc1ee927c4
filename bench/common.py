"""Shared helpers for the benchmarks: real prompts from ../shared/data, peak memory, machine FLOP/s."""

from __future__ import annotations

import json
import os
import resource
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The embedded SmolLM2 as a recipe model spec (benchmarks take any other spec where they accept --model)
MODEL = "{backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}"
SHARED = Path(os.environ.get("FLYWHEEL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def alpaca_eval_pairs(n: int) -> list[tuple[str, str]]:
    """(instruction, reference answer) pairs from AlpacaEval's text-davinci-003 outputs."""
    path = SHARED / "alpaca_eval" / "reference_outputs" / "text_davinci_003.json"
    rows = json.loads(path.read_text())
    return [(r["instruction"], r["output"]) for r in rows[:n]]


def teacher_answers(model, questions: list[str], max_tokens: int) -> list[list[dict]]:
    """The model's greedy answer to each question as a conversation; failed or empty answers left out
    (sequence-level distillation's data)."""
    from dataflywheel.models.base import Sampling

    convs = [[{"role": "user", "content": q}] for q in questions]
    out = model.chat(convs, Sampling(max_tokens=max_tokens))
    return [
        [*c, {"role": "assistant", "content": r.completions[0].text}]
        for c, r in zip(convs, out, strict=True)
        if r.error is None and r.completions[0].text.strip()
    ]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak_gflops(dtype: str = "float32", size: int = 2048, reps: int = 5) -> float:
    """This machine's dense matmul throughput, the denominator of model FLOP utilisation."""
    import torch

    dt = getattr(torch, dtype)
    a, b = torch.randn(size, size, dtype=dt), torch.randn(size, size, dtype=dt)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e9


def run(folder: Path, name: str, body: str):
    """Run the recipe ``body`` (YAML, dedented) as ``folder/name``: (result, manifest, seconds)."""
    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.recipe.validate import validate_file

    (folder / f"{name}.yaml").write_text(textwrap.dedent(body))
    recipe, ops, problems = validate_file(folder / f"{name}.yaml")
    assert not problems, problems
    start = time.perf_counter()
    result = LocalExecutor(recipe, ops, folder / name, progress=False).run()
    manifest = json.loads((folder / name / "manifest.json").read_text())
    return result, manifest, time.perf_counter() - start
