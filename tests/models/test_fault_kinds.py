"""Every model-backed op kind against a server that fails in every way an OpenAI-compatible server can
(tests/fault_server.py's CHAOS_PLAN: 429 with and without Retry-After, 500, garbage, cut-off JSON, a hang
past the timeout, no choices, null content, and a request that fails for good). In each run: no row
unaccounted for (every step's rows in = rows out + rows dropped, generators only add), the failures that
stayed failures are the ones the server gave (counted in the manifest), and each is on its row."""

from __future__ import annotations

import hashlib
import json
import textwrap

import orjson
import pytest

from dataflywheel.engine.local import LocalExecutor
from dataflywheel.engine.runinfo import load_manifest
from dataflywheel.models.client import Model
from dataflywheel.models.openai import OpenAIBackend
from dataflywheel.recipe.validate import validate_file
from tests import fault_server

RETRIES = 2
TOPICS = ["rivers", "bread", "chess", "volcanoes", "violins", "tides", "owls", "glass", "maps", "bees"]


def reply(text: str) -> str:
    """What a well-behaved model would answer, by what the prompt asks for."""
    tag = hashlib.sha1(text.encode()).hexdigest()[:6]
    if "[[A]]" in text:  # a pairwise judge
        return "Both are fine, the first is clearer. [[A]]"
    if "Output:" in text and "positive" in text:  # an annotator (LLMaAA)
        return "positive" if int(tag, 16) % 2 else "negative"
    if "Rate it from 0 to 5" in text:  # a rater (AlpaGasus)
        return f"{int(tag, 16) % 6}\nThe answer is mostly right."
    if "Shorten the text below" in text:  # LLMLingua-2's teacher: the text, every third word left out
        words = text.split("Text:\n")[1].split("\n\nWrite only")[0].split()
        return " ".join(w for i, w in enumerate(words) if i % 3)
    return f"A considered answer ({tag}) about the question asked."


SEED_IDS = {f"r{i}" for i in range(10)}


def rows(n: int = 10) -> list[dict]:
    return [
        {"id": f"r{i}", "instruction": f"Write two sentences about {t}.", "output": f"{t.title()} are old."}
        for i, t in enumerate(TOPICS[:n])
    ]


def llmaaa_rows() -> list[dict]:
    gold = [
        {"id": "g0", "instruction": "I loved every minute of it.", "label": "positive"},
        {"id": "g1", "instruction": "A dull, tiresome film.", "label": "negative"},
    ]
    pool = [
        {"id": f"p{i}", "instruction": f"The film about {t} was something."} for i, t in enumerate(TOPICS)
    ]
    return gold + pool


CASES = {
    # kind: (steps, rows, op whose error column holds failures of its one request per row, or None)
    "scorer": ("- alpagasus: {model: m, max_tokens: 16}", rows(), "alpagasus"),
    "mapper": ("- generate: {model: m, max_tokens: 16}", rows(), "generate"),
    "mapper-lingua": ("- lingua_label: {model: m, max_tokens: 64}", rows(), "lingua_label"),
    "generator": (
        "- evol_instruct: {model: m, rounds: 1, judge_equality: false, keep_seeds: true, max_tokens: 32,"
        " response_max_tokens: 32}",
        rows(),
        None,
    ),
    "selector": (
        "- llmaaa: {model: m, embedder: e, column: label, labels: [positive, negative], k: 1, init: 6,"
        " per_round: 4, rounds: 1, epochs: 2, task: 'Classify the sentiment of the review.'}",
        llmaaa_rows(),
        None,
    ),
    "evaluator": ("- eval_judge: {model: m, judge: m, data: in.jsonl, max_tokens: 16}", rows(), None),
    "loop": ("- loop: {iterations: 2, steps: [{generate: {model: m, max_tokens: 16}}]}", rows(), None),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_every_model_backed_op_kind_accounts_for_every_row_under_every_fault(kind, tmp_path, monkeypatch):
    steps, data, error_op = CASES[kind]
    monkeypatch.setenv("FLYWHEEL_CACHE", str(tmp_path / "calls.sqlite"))
    app = fault_server.create_chaos_app(reply, hang_s=1.0, retries=RETRIES)
    server = fault_server.ServerThread(app).start()
    try:
        (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
        (tmp_path / "r.yaml").write_text(
            textwrap.dedent(f"""
            version: 1
            name: chaos-{kind}
            inputs: [{{path: in.jsonl}}]
            models:
              m: {{backend: openai, model: chaos, base_url: "{server.url}"}}
              e: {{backend: sentence-transformers, model: "embedded:all-minilm-l6-v2", device: cpu}}
            steps:
            {textwrap.indent(steps, "  ").strip()}
            output: {{path: out.jsonl}}
            """)
        )
        recipe, ops, problems = validate_file(tmp_path / "r.yaml")
        assert not problems, problems

        def loader(r):
            backend = OpenAIBackend(
                "chaos", server.url, max_concurrency=4, timeout_s=0.5, max_retries=RETRIES, backoff_base=0.01
            )
            return {"m": Model("m", r.models["m"], backend=backend), "e": Model("e", r.models["e"])}

        result = LocalExecutor(recipe, ops, tmp_path / "run", progress=False, model_loader=loader).run()
    finally:
        server.stop()

    chaos = app.state.chaos
    assert len(chaos.plan) >= len(fault_server.CHAOS_PLAN)  # so every failure mode was served
    assert chaos.served == set(fault_server.CHAOS_PLAN)
    manifest = load_manifest(tmp_path / "run")
    assert manifest["status"] == "finished"
    for step in manifest["steps"]:  # no row unaccounted for, step by step
        dropped = sum(step["dropped"].values())
        if step["kind"] == "generator":
            assert step["rows_out"] + dropped >= step["rows_in"], step
        else:
            assert step["rows_out"] + dropped == step["rows_in"], step
    totals = manifest["totals"]
    assert totals["rows_read"] == len(data)
    out = [orjson.loads(x) for x in result.output_path.read_bytes().splitlines()]
    assert len(out) == totals["rows_out"]
    # the calls that failed for good are exactly those the server never answered
    failed = sum(s["stats"].get("models", {}).get("m", {}).get("failed", 0) for s in manifest["steps"])
    assert chaos.failed_for_good >= 1 and failed == chaos.failed_for_good
    if error_op:  # one request per row: each failure is on its row, named
        errors = [r.get(f"error_{error_op}") or "" for r in out]
        assert sum("HTTP 500" in e for e in errors) == chaos.failed_for_good
        # and every request that did come through was read: no default, no unparsed reply
        assert sum(e == "" for e in errors) == len(out) - chaos.failed_for_good
    if kind == "scorer":
        assert sum(r["score_alpagasus"] is not None for r in out) == len(out) - chaos.failed_for_good
    if kind == "mapper-lingua":  # every third word of each text left out, as the teacher answered
        labelled = [r["lingua_labels"] for r in out if r["lingua_labels"] is not None]
        assert len(labelled) == len(out) - chaos.failed_for_good
        assert all(labels[:6] == [False, True, True, False, True, True] for labels in labelled)
    if kind == "evaluator":  # both orders name the first answer: a tie whenever both verdicts came back
        metrics = manifest["steps"][-1]["stats"]["metrics"]
        assert metrics["ties"] == metrics["judged"] and metrics["unparsed_verdicts"] == 0
        failed_calls = metrics["failed_answers"] + metrics["failed_verdicts"]
        assert failed_calls == chaos.failed_for_good and metrics["excluded"] == failed_calls
    if kind == "generator":  # each seed's evolution that came through is a row naming its parent
        evolved = [r for r in out if r["evol_parent"] is not None]
        assert len(evolved) == 10 - chaos.failed_for_good
        assert all(r["origin"] == "evol_instruct" and r["parents"][0] in SEED_IDS for r in evolved)
        assert len({r["parents"][0] for r in evolved}) == len(evolved)
