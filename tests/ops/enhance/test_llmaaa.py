"""LLMaAA with a scripted annotator: learning to reweight against gold rows, demonstration retrieval,
acquisition by uncertainty, unparsed labels."""

import numpy as np
import pytest
import torch

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.errors import FlywheelError
from dataflywheel.lib.reweight import LinearHead, example_weights
from dataflywheel.ops.enhance.llmaaa import LLMaAA, acquire, parse_label
from tests.fakes import ScriptedBackend, context


def blobs(n, seed, flip=0):
    """Two Gaussian classes in 8 dimensions; the first ``flip`` labels of class 0 say class 1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = (rng.normal(size=(n, 8)) + np.where(y[:, None] == 1, 1.5, -1.5)).astype(np.float32)
    noisy = y.copy()
    flipped = np.flatnonzero(y == 0)[:flip]
    noisy[flipped] = 1
    return x, y, noisy, flipped


def test_flipped_labels_get_near_zero_weight():
    gold_x, gold_y, _, _ = blobs(20, 0)
    x, _, noisy, flipped = blobs(32, 1, flip=6)
    head = LinearHead(8, 2, seed=0)
    head.fit(gold_x, gold_y, epochs=5, lr=0.1)  # a briefly trained model, as after the first round
    w = example_weights(
        head.model,
        torch.as_tensor(x),
        torch.as_tensor(noisy),
        torch.as_tensor(gold_x),
        torch.as_tensor(gold_y),
        0.5,
    ).numpy()
    assert w.sum() == pytest.approx(1.0)
    clean = np.setdiff1d(np.arange(32), flipped)
    assert w[flipped].max() < 1e-3 and w[clean].mean() > 20 * max(w[flipped].mean(), 1e-9)
    # at random initialisation too: a flipped label's gradient points away from the gold rows'
    w0 = example_weights(
        LinearHead(8, 2, seed=3).model, torch.as_tensor(x), torch.as_tensor(noisy),
        torch.as_tensor(gold_x), torch.as_tensor(gold_y), 0.5,
    ).numpy()  # fmt: skip
    assert (w0[flipped] == 0).all()


def test_reweighted_training_resists_label_noise():
    gold_x, gold_y, _, _ = blobs(10, 0)
    x, _, noisy, _ = blobs(200, 1, flip=70)  # 70 of 100 class-0 rows say class 1
    test_x, test_y, _, _ = blobs(400, 2)
    plain, weighted = LinearHead(8, 2, seed=0), LinearHead(8, 2, seed=0)
    plain.fit(x, noisy, epochs=20, lr=0.1)
    weighted.fit(x, noisy, gold_x, gold_y, epochs=20, lr=0.1)
    acc = lambda h: (h.proba(test_x).argmax(1) == test_y).mean()  # noqa: E731
    assert acc(weighted) > 0.95 and acc(weighted) > acc(plain) + 0.1


def test_parse_label():
    labels = ["positive", "negative"]
    assert parse_label(" Positive.", labels) == {"label": "positive"}
    assert parse_label("The sentiment is negative", labels) == {"label": "negative"}
    assert parse_label("positive or negative", labels) is None
    assert parse_label("neutral", labels) is None


def test_acquire_by_uncertainty():
    proba = np.array([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4], [0.99, 0.01]])
    vecs = np.eye(4, dtype=np.float32)
    assert acquire("entropy", proba, vecs, 2, None, 0) == [1, 2]
    assert acquire("least_confidence", proba, vecs, 3, None, 0) == [1, 2, 0]
    assert sorted(acquire("kmeans", proba, vecs, 4, None, 0)) == [0, 1, 2, 3]


def pool_rows():
    rows = [
        {
            S.ID: f"g{i}",
            S.MESSAGES: [{"role": "user", "content": f"gold {'good' if i % 2 else 'bad'} {i}"}],
            "tag_sent": "positive" if i % 2 else "negative",
        }
        for i in range(6)
    ]
    rows += [
        {
            S.ID: f"p{i}",
            S.MESSAGES: [{"role": "user", "content": f"pool {'good' if i % 2 else 'bad'} {i}"}],
            "tag_sent": None,
        }
        for i in range(20)
    ]
    return io.rows_to_table(rows)  # fmt: skip


def vector(text):
    rng = np.random.default_rng(int(text.split()[-1]) + (100 if text.startswith("gold") else 0))
    return (rng.normal(size=4) * 0.3 + (2.0 if "good" in text else -2.0)).tolist()


def annotator(flip=frozenset(), unparsed=frozenset()):
    def reply(conv):
        text = conv[-1]["content"].rsplit("Input: ", 1)[1].split("\n")[0]
        i = int(text.split()[-1])
        if i in unparsed:
            return "hard to say"
        good = "good" in text
        return "positive" if good != (i in flip) else "negative"

    return ScriptedBackend(default=reply)


def test_llmaaa_loop_annotates_reweights_and_labels_the_pool():
    lm = annotator(flip={2, 4, 6}, unparsed={9})
    op = LLMaAA(
        {"model": "m", "embedder": "e", "column": "tag_sent", "init": 8, "per_round": 4, "rounds": 2, "k": 2,
         "epochs": 10},
        ctx=context(m=lm, e=ScriptedBackend(vector=vector)),
    )  # fmt: skip
    sel = op.select(pool_rows())
    cols = {k: v.to_pylist() for k, v in sel.columns.items()}
    assert len(sel.indices) == 26  # every row passes
    rounds = cols["llmaaa_round"]
    assert [r for r in rounds[:6]] == [None] * 6 and sorted(r for r in rounds if r is not None) == [0] * 8 + [
        1
    ] * 4 + [2] * 4
    annotated = [i for i, r in enumerate(rounds) if r is not None]
    for i in annotated:
        j = i - 6
        if j == 9:
            assert cols["tag_sent"][i] is None and cols["error_llmaaa"][i].startswith("unparsed")
        else:
            want = "positive" if (j % 2 == 1) != (j in {2, 4, 6}) else "negative"
            assert cols["tag_sent"][i] == want
    flipped = [i for i in annotated if i - 6 in {2, 4, 6}]
    clean = [i for i in annotated if i - 6 not in {2, 4, 6, 9}]
    assert all(cols["score_llmaaa_weight"][i] < 0.05 for i in flipped)
    assert np.mean([cols["score_llmaaa_weight"][i] for i in clean]) > 0.5
    truth = ["positive" if i % 2 else "negative" for i in range(6)] + [
        "positive" if j % 2 else "negative" for j in range(20)
    ]
    assert cols["llmaaa_predicted"] == truth  # the student separates the pool despite three wrong labels
    assert op.stats["unparsed"] == 1 and sel.stats["counts"]["annotated"] == 15
    prompt = lm.calls[0][-1]["content"]
    assert (
        prompt.startswith("Classify the text. Answer with exactly one of these labels")
        and prompt.count("Input:") == 3
    )


def test_llmaaa_needs_gold_rows_of_two_labels():
    rows = io.rows_to_table(
        [
            {S.ID: "a", S.MESSAGES: [{"role": "user", "content": "x 1"}], "tag_sent": "positive"},
            {S.ID: "b", S.MESSAGES: [{"role": "user", "content": "y 2"}], "tag_sent": None},
        ]
    )
    op = LLMaAA(
        {"model": "m", "embedder": "e", "column": "tag_sent"}, ctx=context(m=annotator(), e=ScriptedBackend())
    )
    with pytest.raises(FlywheelError, match="at least two labels"):
        op.select(rows)


def test_held_out_rows_are_never_annotated_but_predicted():
    table = pool_rows()
    hold = [i >= 16 for i in range(table.num_rows)]  # the last 10 pool rows
    table = table.append_column("holdout", io.rows_to_table([{"h": h} for h in hold]).column("h"))
    op = LLMaAA(
        {"model": "m", "embedder": "e", "column": "tag_sent", "init": 6, "per_round": 4, "rounds": 2,
         "epochs": 10, "holdout": "holdout"},
        ctx=context(m=annotator(), e=ScriptedBackend(vector=vector)),
    )  # fmt: skip
    cols = {k: v.to_pylist() for k, v in op.select(table).columns.items()}
    assert all(cols["llmaaa_round"][i] is None for i in range(16, 26))
    assert sum(r is not None for r in cols["llmaaa_round"]) == 10  # the 10 other pool rows, all of them
    assert op.stats["held_out"] == 10 and all(p is not None for p in cols["llmaaa_predicted"][16:])
