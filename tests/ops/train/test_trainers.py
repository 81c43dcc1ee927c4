"""SFT and DPO on the real SmolLM2 through recipes; assistant-only masking checked token by token."""

from __future__ import annotations

import json
import textwrap

import orjson
import pytest

from dataflywheel.engine.local import LocalExecutor
from dataflywheel.engine.runinfo import load_manifest
from dataflywheel.recipe.validate import validate_file
from dataflywheel.report import write_report
from dataflywheel.train.tokenize import sft_features

pytestmark = pytest.mark.slow

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello there."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


def test_loss_is_on_assistant_tokens_only(smollm2):
    tok = smollm2.tokenizer
    f = sft_features(tok, CONV, 512)
    full = tok.apply_chat_template(CONV, tokenize=False)
    assert tok.decode(f["input_ids"]) == full
    spans, current = [], []
    for t, label in zip(f["input_ids"], f["labels"], strict=True):
        if label == -100:
            if current:
                spans.append(tok.decode(current))
                current = []
        else:
            assert label == t
            current.append(t)
    if current:
        spans.append(tok.decode(current))
    assert spans == ["Hello there.<|im_end|>\n", "4<|im_end|>\n"]  # each assistant turn and its end marker
    assert sft_features(tok, CONV[:2], 512) is None  # nothing to learn without a response
    assert len(sft_features(tok, CONV, 10)["input_ids"]) == 10


def run(tmp_path, body: str):
    (tmp_path / "r.yaml").write_text(textwrap.dedent(body))
    rec, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems, problems
    return LocalExecutor(rec, ops, tmp_path / "run", progress=False).run()


def test_sft_lowers_the_loss_and_the_trained_model_serves_later_steps(tmp_path):
    rows = [{"instruction": f"What is {i} times 2?", "output": f"{i} times 2 is {2 * i}."} for i in range(8)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    body = """
        version: 1
        name: sft
        inputs: [{path: d.jsonl}]
        models:
          base: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}
        steps:
          - sft: {model: base, output_model: tuned, max_steps: 6, batch_size: 4, lr: 0.001, lora_r: 8}
          - generate: {model: tuned, output: answer, max_tokens: 12}
    """
    result = run(tmp_path, body)
    steps = load_manifest(tmp_path / "run")["steps"]
    losses = steps[1]["stats"]["train"]["losses"]
    assert len(losses) == 6 and losses[-1] < losses[0] * 0.7, losses
    train = steps[1]["stats"]["train"]
    assert train["train_tokens"] > 0 and train["tokens_per_second"] > 0
    assert train["gradient_checkpointing"] is False
    write_report(tmp_path / "run")
    page = (tmp_path / "run" / "report.html").read_text()
    assert f"{train['train_tokens']:,} tokens at {train['tokens_per_second']:,.0f}/s" in page
    ckpt = next((tmp_path / "run" / "steps").glob("01-sft-*")) / "checkpoint"
    config = json.loads((ckpt / "config.json").read_text())
    assert "quantization_config" not in config and (ckpt / "model.safetensors").exists()
    out = [orjson.loads(x) for x in result.output_path.read_bytes().splitlines()]
    assert len(out) == 8 and all(r["answer"] for r in out) and all(r["error_generate"] is None for r in out)
    again = run(tmp_path, body)  # finished training is reused, not redone
    assert [s.status for s in again.steps] == ["reused"] * 3


def test_validation_knows_trained_models(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: v
        inputs: [{path: d.jsonl}]
        models:
          base: {backend: hf, model: 'embedded:smollm2-135m-instruct'}
        steps:
          - generate: {model: tuned}
          - sft: {model: base, output_model: tuned}
          - sft: {model: tuned, output_model: base}
    """)
    )
    problems = [str(p) for p in validate_file(tmp_path / "r.yaml")[2]]
    assert "model 'tuned' is not declared under `models:` nor trained by an earlier step" in problems[0]
    assert "model name 'base' is already taken" in problems[1]


def test_dpo_lowers_the_loss_and_widens_the_margin(tmp_path):
    pairs = [
        {"prompt": f"Say the number {i}.", "chosen": f"{i}", "rejected": "I cannot do that."}
        for i in range(8)
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    run(
        tmp_path,
        """
        version: 1
        name: dpo
        inputs: [{path: p.jsonl}]
        models:
          base: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}
        steps:
          - dpo: {model: base, output_model: aligned, max_steps: 4, batch_size: 4, lr: 0.0005, lora_r: 8}
        output: {format: preference}
    """,
    )
    stats = load_manifest(tmp_path / "run")["steps"][1]["stats"]["train"]
    assert stats["losses"][-1] < stats["losses"][0] and stats["reward_margins"][-1] > 0.1, stats
