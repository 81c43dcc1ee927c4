"""Self-Rewarding with a scripted model: n responses, judgements averaged, best/worst pair, ties and
unreadable judgements (never a zero)."""

import itertools

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.evolve.self_reward import SelfReward, judge_score
from tests.fakes import ScriptedBackend, context


def test_judge_score():
    assert judge_score("Relevant but thin.\nScore: 2") == {"score": 2.0}
    assert judge_score("Score: 1 at first... Score: 4") == {"score": 4.0}
    assert judge_score("I give it 4 points") is None


def scripted(judgements):
    """Responses are "q<row> r<k>"; judging "q<row> r<k>" returns the next of judgements[(row, k)]."""
    counters = {}
    cycles = {key: itertools.cycle(v) for key, v in judgements.items()}

    def reply(conv):
        text = conv[-1]["content"]
        if text.startswith("Review the user's question"):
            resp = text.split("<response>")[1].split("</response>")[0]
            row, k = resp.split()
            got = next(cycles[(int(row[1:]), int(k[1:]))])
            return "Because." if got is None else f"Because.\nScore: {got}"
        row = text.split()[-1]
        counters[row] = counters.get(row, 0) + 1
        return f"q{row} r{counters[row] - 1}"

    return ScriptedBackend(default=reply)


def rows(n):
    return io.rows_to_table(
        [{S.ID: f"p{i}", S.MESSAGES: [{"role": "user", "content": f"question {i}"}]} for i in range(n)]
    )


def test_pairs_from_averaged_judgements_ties_and_unparsed():
    judgements = {
        # row 0: means 2, 4 (one unreadable judgement left out, not a 0), 3 -> chosen r1, rejected r0
        (0, 0): [2, 2, 2], (0, 1): [4, None, 4], (0, 2): [3, 3, 3],
        # row 1: every response scores 3 -> a tie, no pair
        (1, 0): [3, 3, 3], (1, 1): [3, 3, 3], (1, 2): [3, 3, 3],
        # row 2: only one response can be scored -> no pair
        (2, 0): [None], (2, 1): [5, 5, 5], (2, 2): [None],
    }  # fmt: skip
    lm = scripted(judgements)
    op = SelfReward({"model": "m", "n": 3, "judgements": 3}, ctx=context(m=lm))
    out = op.map(rows(3)).to_pylist()
    assert out[0][S.CHOSEN] == [{"role": "assistant", "content": "q0 r1"}]
    assert out[0][S.REJECTED] == [{"role": "assistant", "content": "q0 r0"}]
    assert out[0][S.PROMPT] == [{"role": "user", "content": "question 0"}]
    assert out[0]["self_reward_scores"] == [2.0, 4.0, 3.0] and out[0]["score_self_reward_margin"] == 2.0
    assert out[1][S.CHOSEN] is None and out[1]["error_self_reward"] == "tie: every scored response got 3"
    assert out[2][S.CHOSEN] is None and out[2]["error_self_reward"] == "1 of 3 responses could be scored"
    assert out[2]["self_reward_scores"] == [None, 5.0, None]
    assert op.stats["pairs"] == 1 and op.stats["tie"] == 1 and op.stats["unparsed"] == 7
    judged = [c for c in lm.calls if c[-1]["content"].startswith("Review the user's question")]
    assert len(judged) == 9 and [s.n for s in lm.samplings] == [3, 3]  # 3 responses, each judged 3 times
