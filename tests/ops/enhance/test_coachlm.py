import json
import textwrap

import pytest

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.lib.edit import edit_distance
from dataflywheel.ops.enhance.coachlm import CoachLM, CoachPairs, _meta, pair_text, parse_pair, post_process
from tests.fakes import ScriptedBackend, context


def test_parse_and_post_process():
    assert parse_pair("Sure!\nInstruction: Name a fruit.\nResponse: An apple.") == (
        "Name a fruit.",
        "An apple.",
    )
    assert parse_pair("Response: only half") is None
    assert post_process("Good answer 好的 here") == "Good answer  here"
    assert post_process("step one, step one, step one, step one, done") == "step one, done"
    assert post_process("café — naïve") == "café — naïve"  # Latin scripts and punctuation stay


def preference_rows():
    return io.rows_to_table(
        [
            {S.ID: "p0", S.PROMPT: [{"role": "user", "content": "Name a fruit."}],
             S.CHOSEN: [{"role": "assistant", "content": "An apple is a common fruit."}],
             S.REJECTED: [{"role": "assistant", "content": "apple"}]},
        ]
    )  # fmt: skip


def test_coach_pairs_format_and_edit_distance():
    out = CoachPairs({}).map(preference_rows()).to_pylist()[0]
    user, assistant = out[S.MESSAGES]
    raw, revised = (
        pair_text("Name a fruit.", "apple"),
        pair_text("Name a fruit.", "An apple is a common fruit."),
    )
    assert user["content"].endswith("\n\n" + raw) and user["content"].startswith("Improve the following")
    assert assistant["content"] == revised
    assert out["score_coach_edit"] == edit_distance(raw, revised)


def rows():
    return io.rows_to_table(
        [
            {
                S.ID: f"r{i}",
                S.MESSAGES: [
                    {"role": "user", "content": f"Question {i}?"},
                    {"role": "assistant", "content": f"ans {i}"},
                ],
            }
            for i in range(3)
        ]
    )


def test_coachlm_revises_parses_and_keeps_the_raw_row():
    def coach(conv):
        text = conv[-1]["content"]
        i = text.split("Question ", 1)[1][0]
        if i == "0":
            return f"Instruction: Question {i}, asked clearly?\nResponse: A full answer {i}."
        if i == "1":
            return "I would rather not."
        return "Instruction: Q\nResponse: " + " ".join(f"word{k}" for k in range(200))

    op = CoachLM({"model": "c"}, ctx=context(c=ScriptedBackend(default=coach)))
    out = op.map(rows()).to_pylist()
    assert [m["content"] for m in out[0][S.MESSAGES]] == ["Question 0, asked clearly?", "A full answer 0."]
    assert out[0]["coach_raw"][1]["content"] == "ans 0" and out[0]["error_coachlm"] is None
    assert out[1][S.MESSAGES] == out[1]["coach_raw"] and out[1]["error_coachlm"].startswith("unparsed reply")
    assert out[2][S.MESSAGES] == out[2]["coach_raw"] and "longer than max_growth" in out[2]["error_coachlm"]
    assert op.stats["revised"] == 1 and op.stats["too_long"] == 1 and op.stats["unparsed"] == 1


@pytest.mark.slow
def test_coachlm_trains_a_coach_on_alpaca_eval_pairs_and_revises_with_it(tmp_path, shared_data):
    """Recipe 1 trains the coach on AlpacaEval GPT-4 preference pairs (the 30% most revised of 20);
    recipe 2 revises pool rows with the saved checkpoint."""
    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.recipe.validate import validate_file

    annotations = shared_data / "alpaca_eval" / "annotations_alpaca_eval_gpt4" / "alpaca-7b.json"
    (tmp_path / "coach.yaml").write_text(
        textwrap.dedent(f"""
        version: 1
        name: coach
        inputs: [{{path: '{annotations}', limit: 20}}]
        on_error: skip
        models: {{base: {{backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}}}}
        steps:
          - coach_pairs: {{}}
          - sort: {{by: score_coach_edit, descending: true}}
          - head: {{fraction: 0.3}}
          - sft: {{model: base, output_model: coach, max_steps: 2, batch_size: 2, lora_r: 4, warmup_ratio: 0,
                   max_length: 256}}
        """)
    )
    recipe, ops, problems = validate_file(tmp_path / "coach.yaml")
    assert not problems, problems
    first = LocalExecutor(recipe, ops, tmp_path / "coach", progress=False).run()
    pairs = [json.loads(line) for line in open(first.output_path)]
    assert len(pairs) == 6  # 30% of 20
    edits = [r["score_coach_edit"] for r in pairs]
    assert edits == sorted(edits, reverse=True)
    checkpoint = next((tmp_path / "coach" / "steps").glob("04-sft-*")) / "checkpoint"
    (tmp_path / "pool.jsonl").write_text(
        "".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in
                [("Name a fruit.", "apple"), ("What is 2 + 2?", "4"), ("Say hi.", "hi")])
    )  # fmt: skip
    (tmp_path / "revise.yaml").write_text(
        textwrap.dedent(f"""
        version: 1
        name: revise
        inputs: [{{path: pool.jsonl}}]
        models: {{coach: {{backend: hf, model: '{checkpoint}', device: cpu}}}}
        steps:
          - coachlm: {{model: coach, max_tokens: 48}}
        """)
    )
    recipe, ops, problems = validate_file(tmp_path / "revise.yaml")
    assert not problems, problems
    second = LocalExecutor(recipe, ops, tmp_path / "revise", progress=False).run()
    out = [json.loads(line) for line in open(second.output_path)]
    counts = json.loads((tmp_path / "revise" / "manifest.json").read_text())["steps"][1]["stats"]["counts"]
    assert len(out) == 3 and counts["requests"] == 3
    revised = [r for r in out if r["error_coachlm"] is None]
    assert len(revised) == counts.get("revised", 0)
    # the defining step: every reply parsed back into a pair, and revisions replaced their rows
    assert counts.get("unparsed", 0) == 0 and len(revised) + counts.get("too_long", 0) == 3
    assert len(revised) >= 1
    from dataflywheel.models.base import Sampling
    from dataflywheel.models.hf import HFBackend

    coach = HFBackend(str(checkpoint), device="cpu")
    op = CoachLM({"model": "coach", "max_tokens": 48})
    for r in revised:  # each revision again, from a separate call to the coach under the same shape
        raw = (r["coach_raw"][0]["content"], r["coach_raw"][1]["content"])
        ask = [{"role": "user", "content": f"{_meta()}\n\n{pair_text(*raw)}"}]
        (reply,) = coach.chat([ask], Sampling(max_tokens=48, constraint=op.shape()))
        instruction, response = parse_pair(post_process(reply.text))
        assert r["messages"] == [
            {"role": "user", "content": instruction},
            {"role": "assistant", "content": response},
        ]
    for r in out:  # raw rows are kept; revised ones parse back into one user and one assistant turn
        assert r["coach_raw"][0]["role"] == "user"
        if r["error_coachlm"] is None:
            assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        else:
            assert r["messages"] == r["coach_raw"]
