"""Self-Refine through the engine with the real SmolLM2, its feedback constrained to the prompt's format
(one scored line per aspect, then the total): every feedback carries a total score, the recorded feedback
is what the model says when asked again separately, and the chosen response is the best-scored one by an
independent reading of the feedback."""

import json

import pytest

from dataflywheel.models.base import Sampling
from dataflywheel.ops.evolve.self_refine import SelfRefine, total_score
from tests.conftest import run_recipe


@pytest.mark.slow
def test_self_refine_on_smollm2(tmp_path, smollm2):
    rows = [
        {"instruction": "Name three primary colors.", "output": "Red, green."},
        {"instruction": "What is 12 times 3?", "output": "It is 38."},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result, manifest = run_recipe(
        tmp_path,
        """
        version: 1
        name: refine
        inputs: [{path: in.jsonl}]
        models: {lm: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}}
        steps:
          - self_refine: {model: lm, max_rounds: 1, max_tokens: 96}
        output: {path: out.jsonl}
        """,
    )
    out = [json.loads(x) for x in open(result.output_path)]
    counts = manifest["steps"][-1]["stats"]["counts"]
    assert counts.get("feedback_unscored", 0) == 0  # every feedback was read, its total included
    op = SelfRefine({"model": "lm", "max_rounds": 1, "max_tokens": 96})
    for row, given in zip(out, rows, strict=True):
        drafts, feedback = row["refine_drafts"], row["refine_feedback"]
        assert drafts[0] == given["output"] and 1 <= len(drafts) <= 2
        assert row["refine_stop"] in ("stop_phrase", "threshold", "max_rounds")
        assert len(feedback) == len(drafts)
        (again,) = smollm2.chat(
            [op._feedback_prompt(given["instruction"], drafts[0], 25)],
            Sampling(max_tokens=96, constraint=op.feedback_shape(25)),
        )
        assert feedback[0] == again.text.strip()
        scores = [total_score(f, 25) for f in feedback]
        assert None not in scores
        scored = [(s, j) for j, s in enumerate(scores) if s is not None]
        best = max(scored)[1] if scored else len(drafts) - 1
        assert row["messages"][-1]["content"] == drafts[best]
        assert row["score_refine"] == (None if scores[best] is None else scores[best] / 25)
