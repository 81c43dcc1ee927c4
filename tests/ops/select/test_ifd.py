"""IFD on the real SmolLM2, checked against two manual forward passes."""

from __future__ import annotations

import textwrap

import pyarrow as pa
import pytest
import torch

from dataflywheel.data import io
from dataflywheel.models.client import Model
from dataflywheel.ops import registry
from dataflywheel.ops.base import OpContext
from dataflywheel.recipe.models import ModelSpec

ROWS = [
    {
        "messages": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Write the word 'banana' backwards."},
            {"role": "assistant", "content": "ananab"},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Name a red fruit."},
            {"role": "assistant", "content": "A strawberry."},
        ]
    },
]


def manual_mean_nll(backend, prompt_text: str, response: str) -> float:
    """One full forward pass, labels of the prompt masked: the model's own cross-entropy."""
    p, r = backend.split_text_ids(prompt_text, response)
    ids = torch.tensor([p + r])
    labels = ids.clone()
    labels[0, : len(p)] = -100
    with torch.no_grad():
        return backend.model(ids, labels=labels).loss.item()


@pytest.fixture
def ifd(smollm2):
    def run(**params):
        spec = ModelSpec(backend="hf", model="embedded:smollm2-135m-instruct", cache="off")
        op = registry.get("ifd")(
            {"model": "m", **params}, OpContext(models={"m": Model("m", spec, backend=smollm2)})
        )
        return op.score(io.rows_to_table(ROWS))

    return run


@pytest.mark.slow
def test_ifd_equals_two_manual_forward_passes(ifd, smollm2):
    out = ifd()
    header = smollm2.assistant_header()
    for row, got, cond, direct in zip(
        ROWS, out["score_ifd"], out["score_ifd_cond_nll"], out["score_ifd_direct_nll"], strict=True
    ):
        turns = [
            (row["messages"][:t], m["content"])
            for t, m in enumerate(row["messages"])
            if m["role"] == "assistant"
        ]
        c = [manual_mean_nll(smollm2, smollm2.render(ctx), resp) for ctx, resp in turns]
        d = [manual_mean_nll(smollm2, header, resp) for _, resp in turns]
        assert cond == pytest.approx(sum(c) / len(c), abs=1e-4)
        assert direct == pytest.approx(sum(d) / len(d), abs=1e-4)
        assert got == pytest.approx(sum(ci / di for ci, di in zip(c, d, strict=True)) / len(c), abs=1e-4)
    assert out["score_ifd"][0] < 1  # the question makes "Paris" far easier


@pytest.mark.slow
def test_ifd_alpaca_template_scores_raw_text(ifd, smollm2):
    out = ifd(template="alpaca")
    from dataflywheel.ops import prompts
    from dataflywheel.ops.select import ifd as ifd_module

    prefix = prompts.fill(
        prompts.load(ifd_module.__file__, "ifd_alpaca.txt"), instruction="What is the capital of France?"
    )
    c = manual_mean_nll(smollm2, prefix, "The capital of France is Paris.")
    d = manual_mean_nll(smollm2, ifd_module.DIRECT_HEADER, "The capital of France is Paris.")
    assert out["score_ifd"][0] == pytest.approx(c / d, abs=1e-4)


@pytest.mark.slow
def test_ifd_selection_recipe(tmp_path, smollm2):
    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.recipe.validate import validate_file
    from tests.conftest import ROOT

    (tmp_path / "r.yaml").write_text(
        textwrap.dedent(f"""
        version: 1
        name: cherry
        inputs: [{{path: {ROOT / "examples" / "demo_pool.jsonl"}}}]
        on_error: skip
        models:
          scorer: {{backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}}
        steps:
          - head: {{n: 16}}
          - ifd: {{model: scorer}}
          - filter: {{column: score_ifd, max: 1}}
          - sort: {{by: score_ifd, descending: true}}
          - head: {{fraction: 0.5}}
    """)
    )
    rec, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems
    result = LocalExecutor(rec, ops, tmp_path / "run", progress=False).run()
    import orjson

    out = [orjson.loads(x) for x in result.output_path.read_bytes().splitlines()]
    scores = [r["score_ifd"] for r in out]
    assert scores == sorted(scores, reverse=True) and all(s <= 1 for s in scores) and len(out) >= 1
    assert isinstance(pa.array(scores), pa.Array)


def test_ifd_divides_the_conditioned_loss_by_the_direct_one_per_turn():
    from tests.fakes import ScriptedBackend, context

    # with its context a response costs 0.5 nats a token, alone 1.0 (first turn) or 0.8 (second turn)
    def logprob(conv, response):
        if conv:
            return -0.5
        return -1.0 if response.startswith("first") else -0.8

    backend = ScriptedBackend(logprob=logprob)
    rows = [
        {
            "messages": [
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "second answer"},
            ]
        },
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "   "}]},
    ]
    for aggregate, want in (("mean", (0.5 + 0.625) / 2), ("max", 0.625), ("last", 0.625)):
        op = registry.get("ifd")({"model": "m", "aggregate": aggregate}, context(m=backend))
        out = op.score(io.rows_to_table(rows))
        assert out["score_ifd"][0] == pytest.approx(want)
        assert out["score_ifd"][1] is None  # an empty answer has no IFD
    # the direct pass gives no context at all (the backend adds only the assistant header)
    assert [] in backend.calls and [{"role": "user", "content": "q1"}] in backend.calls
