from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dataflywheel.ops import registry
from dataflywheel.ops.base import OpContext
from dataflywheel.ops.select.panel_vote import cohen_kappa, fleiss_kappa


def test_fleiss_kappa_known_values():
    assert fleiss_kappa(np.array([[1, 1, 1], [0, 0, 0], [1, 1, 1], [0, 0, 0]])) == pytest.approx(1.0)
    # Wikipedia-style hand computation: 4 items, 3 raters
    v = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]])
    p_i = np.array([1 / 3, 1 / 3, 1, 1])
    p_bar, p_yes = p_i.mean(), v.mean()
    p_e = p_yes**2 + (1 - p_yes) ** 2
    assert fleiss_kappa(v) == pytest.approx((p_bar - p_e) / (1 - p_e))
    assert cohen_kappa(np.array([1, 0, 1, 0]), np.array([1, 0, 1, 0])) == 1.0


def test_panel_majority_mean_and_abstention():
    t = pa.table(
        {
            "id": list("abcd"),
            "score_j1": [5.0, 5.0, 1.0, None],
            "score_j2": [5.0, 1.0, 1.0, 5.0],
            "score_j3": [4.0, 5.0, 5.0, 5.0],
        }
    )
    op = registry.get("panel_vote")({"columns": ["score_j1", "score_j2", "score_j3"]}, OpContext())
    sel = op.select(t)
    # votes to keep (score >= 4.5): a 2 of 3, b 2 of 3, c 1 of 3, d 2 of 2 (j1 abstains)
    assert sel.columns["score_panel_votes"].to_pylist() == [2.0, 2.0, 1.0, 2.0]
    assert sel.indices.tolist() == [0, 1, 3]
    mean = registry.get("panel_vote")(
        {"columns": ["score_j1", "score_j2", "score_j3"], "rule": "mean"}, OpContext()
    ).select(t)
    assert mean.indices.tolist() == [0, 3]
    assert "fleiss_kappa" in sel.stats and len(sel.stats["cohen_kappa"]) == 3


@pytest.mark.slow
def test_a_panel_of_two_prompts_on_smollm2_votes_in_a_recipe(tmp_path):
    import json
    import textwrap

    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.engine.runinfo import load_manifest
    from dataflywheel.recipe.validate import validate_file
    from tests.conftest import ROOT

    (tmp_path / "r.yaml").write_text(
        textwrap.dedent(f"""
        version: 1
        name: panel
        inputs: [{{path: {ROOT / "examples" / "demo_pool.jsonl"}}}]
        on_error: skip
        models:
          smol: {{backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}}
        steps:
          - head: {{n: 8}}
          - alpagasus: {{model: smol, mode: expected, name: acc}}
          - alpagasus: {{model: smol, mode: expected, dimension: helpfulness, name: help}}
          - panel_vote: {{columns: [score_acc, score_help], threshold: 2.0, rule: mean}}
    """)
    )
    rec, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems, problems
    result = LocalExecutor(rec, ops, tmp_path / "run", progress=False).run()
    step = load_manifest(tmp_path / "run")["steps"][4]
    assert step["rows_in"] == 8 and step["rows_out"] + sum(step["dropped"].values()) == 8
    assert "fleiss_kappa" in step["stats"] and list(step["stats"]["cohen_kappa"]) == [
        "score_acc ~ score_help"
    ]
    out = [json.loads(x) for x in result.output_path.read_text().splitlines()]
    assert all(r["score_panel_mean"] >= 2.0 for r in out)
    assert all(r["score_panel_mean"] == pytest.approx((r["score_acc"] + r["score_help"]) / 2) for r in out)
