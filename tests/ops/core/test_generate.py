"""generate and embed through recipes, on the real embedded models."""

from __future__ import annotations

import textwrap

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from dataflywheel.engine.local import LocalExecutor
from dataflywheel.engine.runinfo import load_manifest
from dataflywheel.recipe.validate import validate_file
from tests.conftest import write_jsonl

SEEDS = [
    "What is the capital of France?",
    "Name a large animal.",
    "What is 2 plus 2?",
    "Say hello in Spanish.",
]


def recipe(tmp_path, steps: str, models: str) -> tuple:
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": s} for s in SEEDS])
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: gen
        inputs: [{path: seeds.jsonl}]
        models:
        """)
        + textwrap.indent(textwrap.dedent(models), "  ")
        + "steps:\n"
        + textwrap.indent(textwrap.dedent(steps), "  ")
    )
    rec, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems, problems
    return rec, ops


SMOL = "student: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}\n"
MINI = "embedder: {backend: sentence-transformers, model: 'embedded:all-minilm-l6-v2', device: cpu}\n"


@pytest.mark.slow
def test_generate_answers_seeds_and_a_rerun_makes_zero_model_calls(tmp_path, smollm2):
    rec, ops = recipe(tmp_path, "- generate: {model: student, max_tokens: 24}\n", SMOL)
    result = LocalExecutor(rec, ops, tmp_path / "run", progress=False).run()
    rows = [orjson.loads(x) for x in result.output_path.read_bytes().splitlines()]
    assert [r["messages"][0]["content"] for r in rows] == SEEDS
    assert all(r["messages"][-1]["role"] == "assistant" and r["messages"][-1]["content"] for r in rows)
    assert "Paris" in rows[0]["messages"][-1]["content"]
    assert all(r["ops"] == ["generate"] and r["error_generate"] is None for r in rows)
    # the same answers as asking the model directly
    from dataflywheel.models.base import Sampling

    direct = smollm2.chat([[{"role": "user", "content": s}] for s in SEEDS], Sampling(max_tokens=24, seed=0))
    assert [r["messages"][-1]["content"] for r in rows] == [d.text for d in direct]
    usage = load_manifest(tmp_path / "run")["steps"][1]["stats"]["models"]["student"]
    assert usage["requests"] == 4 and usage["cached"] == 0 and usage["completion_tokens"] > 0
    # recompute every step: all answers come from the call cache
    rec, ops = recipe(tmp_path, "- generate: {model: student, max_tokens: 24}\n", SMOL)
    again = LocalExecutor(rec, ops, tmp_path / "run", progress=False).run(fresh=True)
    manifest = load_manifest(tmp_path / "run")
    assert manifest["models"]["student"]["requests"] == 0 and manifest["models"]["student"]["cached"] == 4
    assert again.output_path.read_bytes() == result.output_path.read_bytes()


@pytest.mark.slow
def test_embed_writes_normalized_vectors(tmp_path, minilm):
    rec, ops = recipe(tmp_path, "- embed: {model: embedder, name: mini}\n", MINI)
    result = LocalExecutor(rec, ops, tmp_path / "run", progress=False).run()
    table = pq.read_table(next(p for p in (tmp_path / "run" / "steps").glob("01-embed-*/shard-*.parquet")))
    vecs = np.asarray(table.column("embedding_mini").to_pylist(), dtype=np.float32)
    assert vecs.shape == (4, 384)
    np.testing.assert_allclose(vecs, minilm.embed(SEEDS), atol=1e-5)
    assert result.rows_out == 4


def test_validation_refuses_a_model_that_cannot_do_what_the_op_needs(tmp_path):
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": s} for s in SEEDS])
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: gen
        inputs: [{path: seeds.jsonl}]
        models:
          embedder: {backend: sentence-transformers, model: 'embedded:all-minilm-l6-v2'}
        steps:
          - generate: {model: embedder}
          - embed: {model: nobody}
    """)
    )
    problems = [str(p) for p in validate_file(tmp_path / "r.yaml")[2]]
    assert problems[0] == (
        "step 1 (generate), key 'model': model 'embedder' (sentence-transformers backend) "
        "cannot chat; it can: embed"
    )
    assert "model 'nobody' is not declared" in problems[1]


def test_generate_with_a_scripted_model_records_failures_and_empty_replies():
    from dataflywheel.data import io
    from dataflywheel.ops import registry
    from tests.fakes import ScriptedBackend, context

    rows = [
        {"messages": [{"role": "user", "content": s}, {"role": "assistant", "content": "old"}]}
        for s in ("ok please", "fail please", "empty please")
    ]
    backend = ScriptedBackend(script=[("fail", None), ("empty", "  ")], default="new answer")
    op = registry.get("generate")({"model": "m", "system": "Be brief."}, context(m=backend))
    out = op.map(io.rows_to_table(rows)).to_pylist()
    assert [m["content"] for m in backend.calls[0]] == [
        "Be brief.",
        "ok please",
    ]  # the old answer is not sent
    assert out[0]["messages"][-1]["content"] == "new answer" and out[0]["error_generate"] is None
    assert (
        out[1]["messages"][-1]["content"] == "old"
        and out[1]["error_generate"] == "request failed: scripted failure"
    )
    assert out[2]["messages"][-1]["content"] == "old" and out[2]["error_generate"].startswith(
        "unparsed reply"
    )
    assert dict(op.stats) == {"requests": 3, "failed": 1, "replies": 2, "unparsed": 1}
    column = registry.get("generate")({"model": "m", "output": "answer"}, context(m=backend))
    got = column.map(io.rows_to_table(rows[:1])).to_pylist()[0]
    assert got["answer"] == "new answer" and got["messages"] == rows[0]["messages"]


def test_a_bad_response_format_is_a_validation_error_naming_the_step_and_key(tmp_path):
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": s} for s in SEEDS])
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent(f"""
        version: 1
        name: gen
        inputs: [{{path: seeds.jsonl}}]
        models:
          {SMOL}
        steps:
          - generate: {{model: student, response_format: {{regex: "[a-"}}}}
          - generate: {{model: student, response_format: {{json_schema: {{type: objectx}}}}}}
          - generate: {{model: student, response_format: {{regex: a, choice: [b]}}}}
        """)
    )
    _, _, problems = validate_file(tmp_path / "r.yaml")
    text = "\n".join(str(p) for p in problems)
    assert "step 1 (generate), key 'response_format'" in text and "unclosed character class" in text
    assert "step 2 (generate), key 'response_format'" in text and "objectx" in text
    assert "step 3 (generate), key 'response_format'" in text and "exactly one of" in text


def test_a_reply_a_model_could_not_be_held_to_its_response_format_is_unparsed():
    from dataflywheel.data import io
    from dataflywheel.ops import registry
    from tests.fakes import ScriptedBackend, context

    rows = [{"messages": [{"role": "user", "content": s}]} for s in ("json please", "prose please")]
    backend = ScriptedBackend(script=[("json", '{"a": 1}')], default="Sure! Here it is: {a: 1}")
    schema = {"json_schema": {"type": "object"}}
    op = registry.get("generate")({"model": "m", "response_format": schema}, context(m=backend))
    out = op.map(io.rows_to_table(rows)).to_pylist()
    assert out[0]["messages"][-1]["content"] == '{"a": 1}' and out[0]["error_generate"] is None
    assert out[1]["error_generate"].startswith("unparsed reply") and op.stats["unparsed"] == 1
    assert op.ctx.model("m").usage.unconstrained == 2  # the scripted model cannot enforce: counted


@pytest.mark.slow
def test_generate_under_a_json_schema_on_smollm2_makes_json_every_time(tmp_path):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 24}, "confident": {"type": "boolean"}},
        "required": ["answer", "confident"],
        "additionalProperties": False,
    }
    shape = f"{{json_schema: {orjson.dumps(schema).decode()}}}"
    step = f"- generate: {{model: student, max_tokens: 48, output: reply, response_format: {shape}}}\n"
    rec, ops = recipe(tmp_path, step, SMOL)
    result = LocalExecutor(rec, ops, tmp_path / "run", progress=False).run()
    rows = [orjson.loads(line) for line in open(result.output_path, "rb")]
    counts = load_manifest(tmp_path / "run")["steps"][1]["stats"]["counts"]
    assert counts["requests"] == 4 and counts.get("unparsed", 0) == 0
    for r in rows:
        got = orjson.loads(r["reply"])
        assert set(got) == {"answer", "confident"} and isinstance(got["confident"], bool)
