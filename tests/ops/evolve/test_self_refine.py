"""Self-Refine with a scripted model: the stop phrase at the second feedback, the whole history in every
rewrite, the best-scored response kept, unscored feedback never a zero."""

import itertools

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.evolve.self_refine import SelfRefine, history_text, total_score
from tests.fakes import ScriptedBackend, context


def rows(n=1, answer=True):
    convs = []
    for i in range(n):
        conv = [{"role": "user", "content": f"Write a haiku about rain {i}."}]
        if answer:
            conv.append({"role": "assistant", "content": f"draft {i}.0"})
        convs.append({S.ID: f"r{i}", S.MESSAGES: conv})
    return io.rows_to_table(convs)


def test_total_score():
    assert total_score("a: 3/5\nTotal score: 17/25", 25) == 17
    assert total_score("Total score: 17/20", 25) is None  # not the scale asked for
    assert total_score("looks fine", 25) is None


def scripted(scores, stop_at=None):
    """Feedback on the k-th response of a row scores scores[k] (None: no total line); the feedback on
    response ``stop_at`` says the stop phrase; rewrites are numbered."""
    made = itertools.count(1)

    def reply(conv):
        text = conv[-1]["content"]
        if text.startswith("Here is a request and a response"):
            response = text.split("Response:\n")[1].split("\n\nRate the response")[0]
            k = int(response.split(".")[-1]) if "." in response else 0
            lines = ["correctness: 3/5 - fine"]
            if scores[k] is not None:
                lines.append(f"Total score: {scores[k]}/25")
            if stop_at == k:
                lines.append("No further changes.")
            return "\n".join(lines)
        row = text.split("Write a haiku about rain ")[1].split(".")[0]
        return f"draft {row}.{next(made)}"

    return ScriptedBackend(default=reply)


def test_stops_at_the_phrase_and_refines_from_the_whole_history():
    lm = scripted([10, 14, 12], stop_at=2)
    op = SelfRefine({"model": "m"}, ctx=context(m=lm))
    out = op.map(rows()).to_pylist()[0]
    assert out["refine_drafts"] == ["draft 0.0", "draft 0.1", "draft 0.2"]
    assert len(out["refine_feedback"]) == 3 and out["refine_stop"] == "stop_phrase"
    assert out[S.MESSAGES][-1]["content"] == "draft 0.1"  # 14/25 beats the last one's 12/25
    assert out["score_refine"] == 14 / 25
    rewrites = [c[-1]["content"] for c in lm.calls if c[-1]["content"].startswith("Here is a request, the")]
    assert len(rewrites) == 2
    assert "Response 1:\ndraft 0.0" in rewrites[1] and "Response 2:\ndraft 0.1" in rewrites[1]
    assert "Feedback on response 2:" in rewrites[1]


def test_threshold_max_rounds_and_unscored_feedback():
    op = SelfRefine({"model": "m", "threshold": 20}, ctx=context(m=scripted([10, 22, 5])))
    out = op.map(rows()).to_pylist()[0]
    assert out["refine_stop"] == "threshold" and out[S.MESSAGES][-1]["content"] == "draft 0.1"
    op = SelfRefine({"model": "m", "max_rounds": 2}, ctx=context(m=scripted([None, None, None])))
    out = op.map(rows()).to_pylist()[0]
    assert out["refine_stop"] == "max_rounds" and len(out["refine_drafts"]) == 3
    assert out[S.MESSAGES][-1]["content"] == "draft 0.2" and out["score_refine"] is None  # never a zero
    assert op.stats["feedback_unscored"] == 3


def test_generated_first_draft_and_rows_without_an_answer():
    lm = ScriptedBackend(
        script=[("Here is a request and a response", "Total score: 25/25")], default="a fresh haiku"
    )
    out = (
        SelfRefine({"model": "m", "draft": "generate"}, ctx=context(m=lm)).map(rows(answer=False)).to_pylist()
    )
    assert out[0][S.MESSAGES][-1] == {"role": "assistant", "content": "a fresh haiku"}
    assert out[0]["refine_stop"] == "threshold"
    out = SelfRefine({"model": "m"}, ctx=context(m=lm)).map(rows(answer=False)).to_pylist()
    assert out[0]["refine_stop"] == "failed" and out[0][S.MESSAGES] == [
        {"role": "user", "content": "Write a haiku about rain 0."}
    ]


def test_history_text():
    assert history_text(["a", "b"], ["fa"]) == "Response 1:\na\n\nFeedback on response 1:\nfa"
