"""DEITA on the real SmolLM2: expected scores against a manual computation, and the full selection."""

from __future__ import annotations

import textwrap

import numpy as np
import orjson
import pytest
import torch

from dataflywheel.data import io
from dataflywheel.models.client import Model
from dataflywheel.ops import prompts, registry
from dataflywheel.ops.base import OpContext
from dataflywheel.ops.parsing import expected_score
from dataflywheel.ops.select import deita
from dataflywheel.recipe.models import ModelSpec
from tests.conftest import ROOT


def test_expected_score_range_and_no_default():
    assert expected_score([0.0] * 6, deita.SCORES) == pytest.approx(3.5)
    assert expected_score([float("-inf")] * 6, deita.SCORES) is None  # unparsed, never DEITA's 3.0
    assert expected_score([-50, -50, -50, -50, -50, 0], deita.SCORES) == pytest.approx(6.0, abs=1e-6)


@pytest.mark.slow
def test_deita_scores_equal_a_manual_computation(smollm2):
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Explain quantum entanglement to a physicist."},
                {"role": "assistant", "content": "It is a correlation between measurements."},
                {"role": "user", "content": "Now say hi."},
                {"role": "assistant", "content": "Hi!"},
            ]
        }
    ]
    spec = ModelSpec(backend="hf", model="embedded:smollm2-135m-instruct", cache="off")
    op = registry.get("deita")({"model": "m"}, OpContext(models={"m": Model("m", spec, backend=smollm2)}))
    out = {k: v.to_pylist() for k, v in op.score(io.rows_to_table(rows)).items()}
    ids = [smollm2.encode(o)[0] for o in deita.OPTIONS]

    def manual(text):
        x = torch.tensor([smollm2.encode(smollm2.render([{"role": "user", "content": text}]))])
        with torch.no_grad():
            p = torch.softmax(smollm2.model(x).logits[0, -1, ids].float(), 0).numpy()
        return float(np.dot(p, np.arange(1, 7)))

    comp = prompts.load(deita.__file__, "deita_complexity.txt")
    qual = prompts.load(deita.__file__, "deita_quality.txt")
    turns = [
        ("Explain quantum entanglement to a physicist.", "It is a correlation between measurements."),
        ("Now say hi.", "Hi!"),
    ]
    c = [manual(prompts.fill(comp, instruction=q)) for q, _ in turns]
    q = [manual(prompts.fill(qual, instruction=i, response=a)) for i, a in turns]
    assert out["score_deita"][0] == pytest.approx(sum(ci * qi for ci, qi in zip(c, q, strict=True)), abs=1e-3)
    assert out["score_deita_complexity"][0] == pytest.approx(np.mean(c), abs=1e-4)


@pytest.mark.slow
def test_deita_selection_recipe(tmp_path):
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent(f"""
        version: 1
        name: deita
        inputs: [{{path: {ROOT / "examples" / "demo_pool.jsonl"}}}]
        on_error: skip
        models:
          scorer: {{backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}}
        steps:
          - head: {{n: 12}}
          - deita: {{model: scorer}}
          - embed: {{model: scorer, field: conversation, pooling: last, name: repr}}
          - diverse_filter: {{column: embedding_repr, order_by: score_deita, tau: 0.9, k: 6}}
    """)
    )
    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.recipe.validate import validate_file

    rec, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems, problems
    result = LocalExecutor(rec, ops, tmp_path / "run", progress=False).run()
    out = [orjson.loads(x) for x in result.output_path.read_bytes().splitlines()]
    x = np.asarray([r["embedding_repr"] for r in out], dtype=np.float32)
    sims = x @ x.T
    np.fill_diagonal(sims, -1)
    assert 1 <= len(out) <= 6 and sims.max() < 0.9
    assert all(1 <= r["score_deita_quality"] <= 6 for r in out)


def test_deita_asks_two_questions_per_answered_turn_and_combines_them():
    from tests.fakes import ScriptedBackend, context

    def distribution(conv, options):  # complexity prompts put all mass on "2", quality prompts on "5"
        want = "5" if "quality" in conv[-1]["content"] else "2"
        return [0.0 if o == want else float("-inf") for o in options]

    backend = ScriptedBackend(option_logprobs=distribution)
    op = registry.get("deita")({"model": "m"}, context(m=backend))
    rows = [
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
                {"role": "assistant", "content": "d"},
            ]
        },
        {"messages": [{"role": "user", "content": "no answer yet"}]},
    ]
    out = op.score(io.rows_to_table(rows))
    assert len(backend.calls) == 4  # two turns x (complexity, quality)
    assert out["score_deita"].to_pylist() == [pytest.approx(2 * 5 + 2 * 5), None]
    assert out["score_deita_complexity"].to_pylist()[0] == pytest.approx(2.0)
    assert out["score_deita_quality"].to_pylist()[0] == pytest.approx(5.0)
    assert "Answer:\nd" in backend.calls[3][-1]["content"]  # the second turn's quality sees its answer
    assert out["error_deita"].to_pylist() == [None, "no answered turn"]
