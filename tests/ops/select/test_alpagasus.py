"""AlpaGasus on the real SmolLM2: replies parsed or recorded as unparsed; the expected-score variant
checked against a manual next-token distribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataflywheel.data import io
from dataflywheel.models.client import Model
from dataflywheel.ops import registry
from dataflywheel.ops.base import OpContext
from dataflywheel.recipe.models import ModelSpec

pytestmark = pytest.mark.slow

ROWS = [
    {
        "messages": [
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "2 + 2 = 4."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "What is the capital of Canada?"},
            {"role": "assistant", "content": "The capital of Canada is Toronto."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Name a primary color."},
            {"role": "assistant", "content": "Blue."},
        ]
    },
]


def op(smollm2, **params):
    spec = ModelSpec(backend="hf", model="embedded:smollm2-135m-instruct", cache="off")
    o = registry.get("alpagasus")(
        {"model": "m", **params}, OpContext(models={"m": Model("m", spec, backend=smollm2)})
    )
    return o


def test_generate_mode_parses_or_records(smollm2):
    out = op(smollm2, max_tokens=32).score(io.rows_to_table(ROWS))
    for score, err in zip(
        out["score_alpagasus"].to_pylist(), out["error_alpagasus"].to_pylist(), strict=True
    ):
        assert (score is not None and 0 <= score <= 5 and err is None) or (
            score is None and "unparsed" in err
        )


def test_expected_mode_equals_a_manual_next_token_distribution(smollm2):
    o = op(smollm2, mode="expected")
    out = o.score(io.rows_to_table(ROWS))["score_alpagasus"].to_pylist()
    prompts = o.prompts([r["messages"] for r in ROWS])
    token_ids = [smollm2.encode(str(k))[0] for k in range(6)]
    for got, conv in zip(out, prompts, strict=True):
        ids = torch.tensor([smollm2.encode(smollm2.render(conv))])
        with torch.no_grad():
            logits = smollm2.model(ids).logits[0, -1].float()
        p = torch.softmax(logits[token_ids], dim=0).numpy()
        assert got == pytest.approx(float(np.dot(p, np.arange(6))), abs=1e-4)
        assert 0 <= got <= 5
