"""The cascade on the real SmolLM2 as drafter, with a priced OpenAI-compatible teacher on loopback: what it
saves against asking the teacher for every row, on the same seeds, and at what quality."""

import json
import textwrap

import pytest

from dataflywheel.engine.local import LocalExecutor
from dataflywheel.lib.answers import final_answer
from dataflywheel.recipe.validate import validate_file
from tests.fault_server import ServerThread, priced_teacher_app

QUESTIONS = {
    "What is 2 + 3?": 5,
    "What is 10 - 4?": 6,
    "What is 6 times 7?": 42,
    "What is 100 divided by 4?": 25,
}


def run(tmp_path, name, step, url):
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"instruction": q}) + "\n" for q in QUESTIONS))
    (tmp_path / f"{name}.yaml").write_text(
        textwrap.dedent(f"""
        version: 1
        name: {name}
        inputs: [{{path: q.jsonl}}]
        models:
          drafter: {{backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}}
          teacher: {{backend: openai, model: teacher, base_url: '{url}', cache: "off",
                     price_per_m_input: 3.0, price_per_m_output: 15.0}}
        steps:
          - {step}
        """)
    )
    recipe, ops, problems = validate_file(tmp_path / f"{name}.yaml")
    assert not problems, problems
    result = LocalExecutor(recipe, ops, tmp_path / name, progress=False).run()
    rows = [json.loads(line) for line in open(result.output_path)]
    step = json.loads((tmp_path / name / "manifest.json").read_text())["steps"][1]["stats"]
    return rows, step


def correct(rows) -> int:
    truth = {q: str(v) for q, v in QUESTIONS.items()}
    return sum(
        final_answer(r["messages"][-1]["content"], "last_number") == truth[r["messages"][0]["content"]]
        for r in rows
    )


@pytest.mark.slow
def test_the_cascade_saves_teacher_calls_and_money(tmp_path):
    server = ServerThread(
        priced_teacher_app({q: f"The answer is {v}." for q, v in QUESTIONS.items()})
    ).start()
    try:
        every, every_stats = run(tmp_path, "teacher", "generate: {model: teacher}", server.url)
        rows, stats = run(
            tmp_path, "cascade",
            "cascade: {model: drafter, teacher: teacher, samples: 2, max_tokens: 32, teacher_max_tokens: 32}",
            server.url,
        )  # fmt: skip
    finally:
        server.stop()
    all_cost = every_stats["models"]["teacher"]["cost"]
    assert all_cost == pytest.approx(4 * (20 * 3.0 + 10 * 15.0) / 1e6)  # 4 calls at the teacher's prices
    assert correct(every) == 4
    counts = stats["counts"]
    escalated = [r for r in rows if r["cascade_source"] == "teacher"]
    assert counts["teacher_calls"] == len(escalated) == stats["models"]["teacher"]["requests"]
    # the money follows the calls: each escalated row costs what one all-teacher row cost
    assert stats["models"]["teacher"]["cost"] == pytest.approx(all_cost * len(escalated) / 4)
    for r in rows:
        if r["cascade_source"] == "drafter":  # kept only when both samples agreed with the draft
            assert r["cascade_check"] == 1.0
        else:
            assert r["cascade_check"] is None or r["cascade_check"] < 0.75
    # quality: escalated rows are right; kept drafts are right unless SmolLM2 was consistently wrong
    assert correct(escalated) == len(escalated)
    assert counts["drafter_calls"] == 8  # 4 drafts, then one request of 2 samples for each
    # the defining step: some drafts were kept, so the cascade saved teacher calls and money
    assert counts["kept_drafts"] >= 1 and counts["teacher_calls"] < 4
    assert stats["models"]["teacher"]["cost"] < all_cost


@pytest.mark.slow
def test_the_judge_check_reads_every_rating_and_keeps_exactly_the_drafts_rated_high_enough(tmp_path, smollm2):
    from dataflywheel.models.base import Sampling
    from dataflywheel.ops import prompts
    from dataflywheel.ops.parsing import bracketed_score_shape, parse_score
    from dataflywheel.ops.synthesize import cascade

    server = ServerThread(
        priced_teacher_app({q: f"The answer is {v}." for q, v in QUESTIONS.items()})
    ).start()
    try:
        rows, stats = run(
            tmp_path, "judged",
            "cascade: {model: drafter, teacher: teacher, check: judge, min_score: 5, max_tokens: 24, "
            "teacher_max_tokens: 32}",
            server.url,
        )  # fmt: skip
    finally:
        server.stop()
    counts = stats["counts"]
    assert counts["judge_calls"] == 4 and counts.get("check_unread", 0) == 0  # every rating was read
    # the ratings again, from separate calls: the drafts, then the judge under the same shape
    drafts = smollm2.chat([[{"role": "user", "content": q}] for q in QUESTIONS], Sampling(max_tokens=24))
    template = prompts.load(cascade.__file__, "cascade_judge.txt")
    asks = [
        [{"role": "user", "content": prompts.fill(template, question=q, answer=d.text.strip())}]
        for q, d in zip(QUESTIONS, drafts, strict=True)
    ]
    shaped = Sampling(max_tokens=64, constraint=bracketed_score_shape(1, 10, 64))
    ratings = [parse_score(r.text, 1, 10) for r in smollm2.chat(asks, shaped)]
    by_question = {r["messages"][0]["content"]: r for r in rows}
    for q, d, rating in zip(QUESTIONS, drafts, ratings, strict=True):
        row = by_question[q]
        assert row["cascade_check"] == rating
        if rating >= 5:
            assert row["cascade_source"] == "drafter" and row["messages"][-1]["content"] == d.text.strip()
        else:
            assert (
                row["cascade_source"] == "teacher"
                and row["messages"][-1]["content"] == f"The answer is {QUESTIONS[q]}."
            )
    assert counts["teacher_calls"] == sum(r < 5 for r in ratings)
