"""Token budgets: every selector that keeps a budget can keep one in training tokens."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dataflywheel.data import io
from dataflywheel.lib.tokens import fit_prefix, most_that_fit, row_tokens
from dataflywheel.ops import registry
from dataflywheel.ops.base import OpContext, Selector

COSTS = np.array([50, 10, 30, 10, 40, 20, 60, 10, 30, 20])


@pytest.fixture
def costs(monkeypatch):
    monkeypatch.setattr(Selector, "token_costs", lambda self, table: COSTS[: table.num_rows])
    return COSTS


def table(n=10, dim=4):
    x = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    return pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "embedding_default": pa.array(list(x), pa.list_(pa.float32())),
            "tag_task": [f"t{i % 3}" for i in range(n)],
            "score_x": [float(i) for i in range(n)],
        }
    )


def test_fit_prefix_and_most_that_fit():
    assert fit_prefix(np.array([0, 1, 2, 3]), COSTS, 90).tolist() == [0, 1, 2]  # 50 + 10 + 30
    assert fit_prefix(np.array([6, 1]), COSTS, 59).tolist() == []  # the first does not fit: stop
    assert most_that_fit(COSTS, 45) == 3  # 10 + 10 + 10 (the cheapest; a 20 more would pass 45)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("sample", {}),
        ("kcenter_select", {"first": 0}),
        ("cluster_sample", {"n_clusters": 3}),
    ],
)
def test_row_selectors_keep_within_the_tokens_and_fill_their_order(costs, name, params):
    op = registry.get(name)({"tokens": 100, **params}, OpContext())
    assert "messages" in op.view_columns()
    sel = op.select(table())
    spent = int(costs[sel.indices].sum())
    assert 0 < spent <= 100
    assert len(np.unique(sel.indices)) == len(sel.indices)


def test_kcenter_with_tokens_keeps_the_pick_order_prefix(costs):
    from dataflywheel.lib.diversity import kcenter_greedy, matrix

    t = table()
    order = kcenter_greedy(matrix(t, "embedding_default"), 10, 0)
    want = sorted(fit_prefix(order, costs, 100).tolist())
    sel = registry.get("kcenter_select")({"tokens": 100, "first": 0}, OpContext()).select(t)
    assert sel.indices.tolist() == want


def test_group_select_keeps_whole_groups_while_they_fit(costs):
    t = table()  # t0: rows 0,3,6,9 (140 tokens), t1: 1,4,7 (60), t2: 2,5,8 (80); mean score t0 4.5 t1 4 t2 5
    sel = registry.get("group_select")(
        {"by": "tag_task", "score": "score_x", "tokens": 150}, OpContext()
    ).select(t)
    assert sel.indices.tolist() == [2, 5, 8]  # t2 (80 tokens) first; t0 (140 more) does not fit: stop


def test_exactly_one_budget():
    with pytest.raises(ValueError, match="exactly one of k, fraction or tokens"):
        registry.get("sample")({"k": 3, "tokens": 10})


@pytest.mark.slow
def test_row_tokens_count_the_chat_template_rendering():
    from dataflywheel.lib.tokens import load_tokenizer

    rows = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"}]},
        {
            "prompt": [{"role": "user", "content": "Q?"}],
            "chosen": [{"role": "assistant", "content": "Yes."}],
            "rejected": [{"role": "assistant", "content": "No, never."}],
        },
    ]
    tok = load_tokenizer("embedded:smollm2-135m-instruct")
    sft = row_tokens(io.rows_to_table(rows[:1]))

    def n(conv):
        return len(tok.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"])

    assert sft.tolist() == [n(rows[0]["messages"])]
    pref = row_tokens(io.rows_to_table(rows[1:]))
    both = [rows[1]["prompt"] + rows[1][side] for side in ("chosen", "rejected")]
    assert pref.tolist() == [sum(n(c) for c in both)]
