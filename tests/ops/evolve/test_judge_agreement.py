"""The model as a judge against GPT-4's preferences, with a scripted judge: agreement over decided pairs,
ties, unscored pairs and unparsed judgements counted, ties of the reference judge left out; and
Self-Rewarding's expected-score judge."""

import json
import math

import pytest

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.evolve.judge_agreement import JudgeAgreement
from dataflywheel.ops.evolve.self_reward import SelfReward
from tests.fakes import ScriptedBackend, context


def annotations(path):
    """AlpacaEval-style annotations: answers name their quality ("good k" scores k); row 3 is a tie."""
    rows = [
        {"instruction": "q0", "output_1": "good 4", "output_2": "good 2", "preference": 1},  # agree
        {"instruction": "q1", "output_1": "good 1", "output_2": "good 3", "preference": 2},  # agree
        {"instruction": "q2", "output_1": "good 5", "output_2": "good 3", "preference": 2},  # disagree
        {"instruction": "q3", "output_1": "good 3", "output_2": "good 3", "preference": 0},  # no preference
        {"instruction": "q4", "output_1": "good 2", "output_2": "good 2", "preference": 1},  # judge ties
        {"instruction": "q5", "output_1": "mute", "output_2": "good 2", "preference": 1},  # unscored
    ]
    path.write_text(json.dumps(rows))
    return path


def judge(conv):
    response = conv[-1]["content"].split("<response>")[1].split("</response>")[0]
    return "No idea." if response == "mute" else f"Fine.\nScore: {response.split()[1]}"


def test_agreement_over_decided_pairs_with_everything_else_counted(tmp_path):
    lm = ScriptedBackend(default=judge)
    op = JudgeAgreement(
        {"model": "m", "data": str(annotations(tmp_path / "a.json")), "judgements": 2}, ctx=context(m=lm)
    )
    got = op.evaluate()
    assert got["agreement"] == pytest.approx(2 / 3, abs=1e-4) and got["decided"] == 3
    assert got["pairs"] == 5 and got["ties"] == 1 and got["unscored"] == 1 and got["left_out_rows"] == 1
    assert got["unparsed_judgements"] == 2 and got["failed_requests"] == 0  # "mute" judged twice, unread
    assert len(lm.calls) == 10 and {s.n for s in lm.samplings} == {2}  # each answer alone, twice
    params = {"model": "m", "data": str(tmp_path / "a.json"), "limit": 1}
    limited = JudgeAgreement(params, ctx=context(m=ScriptedBackend(default=judge))).evaluate()
    assert limited["pairs"] == 1 and limited["agreement"] == 1.0


def test_agreement_when_nothing_is_decided_is_nan_not_zero(tmp_path):
    op = JudgeAgreement(
        {"model": "m", "data": str(annotations(tmp_path / "a.json"))},
        ctx=context(m=ScriptedBackend(default="I cannot score this.")),
    )
    got = op.evaluate()
    assert math.isnan(got["agreement"]) and got["decided"] == 0 and got["unscored"] == 5


def expected_judge(conv, options):
    """Next-token log-probabilities over "0".."5" peaked at the quality the answer names."""
    text = conv[-1]["content"]
    assert text.rstrip().endswith("one digit from 0 to 5.")
    k = int(text.split("<response>")[1].split("</response>")[0].split()[1])
    return [0.0 if int(o) == k else -50.0 for o in options]


def test_expected_mode_scores_by_the_next_token_distribution(tmp_path):
    (tmp_path / "b.json").write_text(
        json.dumps([{"instruction": "q", "output_1": "good 1", "output_2": "good 4", "preference": 2}])
    )
    lm = ScriptedBackend(option_logprobs=expected_judge)
    got = JudgeAgreement(
        {"model": "m", "data": str(tmp_path / "b.json"), "judge_mode": "expected"}, ctx=context(m=lm)
    ).evaluate()
    assert got["agreement"] == 1.0 and got["decided"] == 1 and lm.samplings == []  # no sampling at all

    rows = io.rows_to_table([{S.ID: "p", S.MESSAGES: [{"role": "user", "content": "question"}]}])
    answers = iter(["good 2", "good 5", "good 3"])
    lm = ScriptedBackend(default=lambda conv: next(answers), option_logprobs=expected_judge)
    op = SelfReward({"model": "m", "n": 3, "judge_mode": "expected"}, ctx=context(m=lm))
    out = op.map(rows).to_pylist()[0]
    assert out["self_reward_scores"] == pytest.approx([2.0, 5.0, 3.0])
    assert out[S.CHOSEN][0]["content"] == "good 5" and out[S.REJECTED][0]["content"] == "good 2"
