"""RobustFT with a scripted model: the clean/noisy rule, unparsed and failed answers, the k nearest clean
rows as context, the review, the median entropy cut, and the noise-injection protocol."""

import math

import numpy as np
import pyarrow as pa
import pytest

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.data.formats import to_canonical
from dataflywheel.errors import DataError, FlywheelError, Location
from dataflywheel.evaluate.tasks import final_choice
from dataflywheel.experiments.noise import inject_label_noise, score_repair
from dataflywheel.ops.enhance.robustft import RobustFTDetect, RobustFTRelabel
from tests.fakes import ScriptedBackend, context


def mc(question, answer, options=("one", "two", "three", "four")):
    return to_canonical(
        {"question": question, "choices": list(options), "answer": answer}, "multiple_choice", None
    )


def test_multiple_choice_format_reads_mmlu_and_arc_layouts():
    row = mc("What is 2 + 2?", 3)
    assert row[S.MESSAGES] == [
        {"role": "user", "content": "What is 2 + 2?\n\nA. one\nB. two\nC. three\nD. four"},
        {"role": "assistant", "content": "Answer: D"},
    ]
    assert row["answer"] == "D"
    assert mc("q", "b")["answer"] == "B" and mc("q", "2")["answer"] == "C"
    arc = {"question": "q", "choices": {"text": ["x", "y", "z"], "label": ["1", "2", "3"]}, "answerKey": "2"}
    assert to_canonical(arc, "multiple_choice", None)["answer"] == "B"
    with pytest.raises(DataError) as e:
        to_canonical(
            {"question": "q", "choices": ["x", "y"], "answer": 5}, "multiple_choice", Location("f", 3)
        )
    assert str(e.value).startswith("f:3: field 'answer': not an option")


def test_final_choice_takes_the_conclusion():
    assert final_choice("A is wrong because ... so the answer is C.\nAnswer: B") == "B"
    assert final_choice("Option C fits best.\n\nAnswer: (C)") == "C"
    assert final_choice("I think D") is None
    assert final_choice("Answer: E") is None  # not one of ABCD


QUESTIONS = [f"Question {i} about {'cats' if i % 2 else 'dogs'}?" for i in range(6)]


def table(rows):
    return io.rows_to_table([{S.ID: str(i), **r} for i, r in enumerate(rows)])


def test_detect_tags_rows_by_agreement_of_both_answers():
    rows = [mc(QUESTIONS[i], "A") for i in range(5)] + [
        {S.MESSAGES: [{"role": "user", "content": "no label"}, {"role": "assistant", "content": "maybe"}]}
    ]
    direct = {0: "Answer: A", 1: "Answer: B", 2: "Answer: A", 3: "Answer: A", 4: None}
    reasoned = {0: "think\nAnswer: A", 1: "Answer: A", 2: "I cannot tell", 3: "so\nAnswer: C", 4: "Answer: A"}

    def reply(conv):
        text = conv[-1]["content"]
        i = next(i for i, q in enumerate(QUESTIONS) if q in text)
        return (direct if "nothing else" in text else reasoned)[i]

    lm = ScriptedBackend(default=reply, logprob=lambda conv, text: -0.5 if "think" in text else -2.0)
    op = RobustFTDetect({"model": "m", "max_tokens": 32}, ctx=context(m=lm))
    out = pa.table(op.score(table(rows))).to_pylist()
    assert [r["tag_robustft"] for r in out] == ["clean", "noisy", "noisy", "noisy", None, None]
    assert [r["robustft_direct"] for r in out[:4]] == ["A", "B", "A", "A"]
    assert [r["robustft_reasoned"] for r in out[:4]] == ["A", "A", None, "C"]
    assert out[0]["score_robustft_entropy_r"] == 0.5 and out[1]["score_robustft_entropy_r"] == 2.0
    assert out[4]["error_robustft"].startswith("request failed")
    assert out[5]["error_robustft"].startswith("no label") and out[5]["robustft_label"] is None
    assert op.stats["unparsed"] == 1 and op.stats["clean"] == 1 and op.stats["noisy"] == 3
    assert op.stats["no_label"] == 1
    sent = [c[-1]["content"] for c in lm.calls]
    assert not any("no label" in s for s in sent)  # a row without a label is never asked about


def topic(text):
    """Questions about cats and dogs point different ways: the nearest clean rows share the topic."""
    q = text.split("\n")[0]
    return [1.0, 0.0, 0.01 * len(q)] if "cats" in q else [0.0, 1.0, 0.01 * len(q)]


def detected(tags, answers):
    rows = []
    for i, (tag, a) in enumerate(zip(tags, answers, strict=True)):
        r = mc(f"Question {i} about {'cats' if i % 2 else 'dogs'}?", a)
        r.update(
            tag_robustft=tag, robustft_label=a, robustft_reasoned="B", robustft_reasoning=f"reasoning {i}"
        )
        rows.append(r)
    return table(rows)


def test_relabel_uses_nearest_clean_rows_reviews_and_keeps_below_the_median():
    # rows 0, 1 clean; 2..5 noisy; 6 untagged (its request failed in detection)
    data = detected(["clean", "clean", "noisy", "noisy", "noisy", "noisy", None], list("ABCDABC"))
    entropy = {2: 0.2, 3: 0.4, 4: 0.9, 5: 0.1}

    def lp(conv, text):
        q = conv[-1]["content"].split("Now answer this question.")[-1]
        return -entropy[next(i for i in entropy if f"Question {i} " in q)]

    def answer(conv):
        text = conv[-1]["content"]
        if text.startswith("Two solvers"):
            return "The second is right.\nAnswer: D" if "Question 5 " not in text else "unsure"
        return "Answer: B"

    lm = ScriptedBackend(default=answer, logprob=lp)
    emb = ScriptedBackend(vector=topic)
    op = RobustFTRelabel(
        {"model": "m", "embedder": "e", "k": 1, "answer_field": "answer"}, ctx=context(m=lm, e=emb)
    )
    sel = op.select(data)
    # median of H_c over the noisy rows {0.2, 0.4, 0.9, 0.1} = 0.3: rows 2 and 5 are below, 5's review names
    # no option; rows 3 and 4 are at or above it
    assert sorted(sel.indices.tolist()) == [0, 1, 2, 6]
    assert sel.reason == {
        3: "robustft: relabel entropy not below the median",
        4: "robustft: relabel entropy not below the median",
        5: "robustft: review names no option",
    }
    cols = {k: v.to_pylist() for k, v in sel.columns.items()}
    assert cols["robustft_final"][2] == "D" and cols["answer"][2] == "D" and cols["answer"][0] == "A"
    assert cols[S.MESSAGES][2][-1] == {"role": "assistant", "content": "Answer: D"}
    assert cols[S.MESSAGES][0] == data.column(S.MESSAGES)[0].as_py()  # clean rows unchanged
    assert cols["robustft_relabeled"] == [False, False, True, False, False, False, False]
    assert math.isclose(cols["score_robustft_entropy"][2], 0.2)
    assert sel.stats["counts"]["threshold"] == pytest.approx(0.3)
    assert sel.stats["counts"]["untagged"] == 1 and sel.stats["counts"]["changed"] == 1
    contexts = [c[-1]["content"] for c in lm.calls if c[-1]["content"].startswith("Here are")]
    for text in contexts:  # k = 1: the one clean row of the same topic, with its label
        i = int(text.split("Now answer this question.")[-1].split("Question ")[1].split()[0])
        shown = "Question 1 about cats?" if i % 2 else "Question 0 about dogs?"
        assert shown in text and f"Answer: {'B' if i % 2 else 'A'}" in text
    review = next(
        c[-1]["content"]
        for c in lm.calls
        if "Question 2 " in c[-1]["content"] and "Two solvers" in c[-1]["content"]
    )
    assert "reasoning 2" in review and "Its answer: B" in review and "answered: B" in review


def test_relabel_without_review_uses_the_context_answer_and_needs_clean_rows():
    data = detected(["clean", "noisy", "noisy"], list("ABC"))
    lm = ScriptedBackend(
        default="Answer: A",
        logprob=lambda conv, text: (
            -1.0 if "Question 1 " in conv[-1]["content"].split("Now answer")[-1] else -3.0
        ),
    )
    op = RobustFTRelabel(
        {"model": "m", "embedder": "e", "review": False}, ctx=context(m=lm, e=ScriptedBackend(vector=topic))
    )
    sel = op.select(data)
    assert sel.indices.tolist() == [0, 1] and sel.columns["robustft_final"].to_pylist() == [None, "A", "A"]
    assert not any("Two solvers" in c[-1]["content"] for c in lm.calls)
    op = RobustFTRelabel({"model": "m", "embedder": "e"}, ctx=context(m=lm, e=ScriptedBackend(vector=topic)))
    with pytest.raises(FlywheelError, match="no row was tagged clean"):
        op.select(detected(["noisy", "noisy"], list("AB")))


def test_noise_injection_flips_exactly_the_rate_to_wrong_letters():
    rows = [
        {"question": f"q{i}", "choices": ["a", "b", "c", "d"], "answer": "ABCD"[i % 4]} for i in range(40)
    ]
    noisy = inject_label_noise(rows, 0.3, seed=1)
    assert noisy.flipped.sum() == 12
    for row, orig, f in zip(noisy.rows, rows, noisy.flipped, strict=True):
        assert row["true_answer"] == orig["answer"] and (row["answer"] != orig["answer"]) == bool(f)
    assert inject_label_noise(rows, 0.3, seed=1).flipped.tolist() == noisy.flipped.tolist()


def test_score_repair_counts():
    rows = [{"question": "q", "choices": ["a", "b"], "answer": a} for a in "AAAA"]
    noisy = inject_label_noise(rows, 0.5, seed=0)
    wrong = [str(i) for i in np.flatnonzero(noisy.flipped)]
    right = [str(i) for i in np.flatnonzero(~noisy.flipped)]
    tags = {wrong[0]: "noisy", right[0]: "noisy", wrong[1]: "clean", right[1]: "clean"}
    repaired = {wrong[0]: "A", right[0]: "B", right[1]: "A"}  # one fixed, one broken, one clean kept
    s = score_repair(noisy, tags, repaired)
    assert (s.flagged, s.precision, s.recall) == (2, 0.5, 0.5)
    assert s.accuracy_noisy == 0.5 and s.accuracy_repaired == pytest.approx(2 / 3)
    assert (s.kept, s.relabeled, s.relabeled_right) == (3, 2, 1)
