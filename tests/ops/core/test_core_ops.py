from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from dataflywheel.errors import FlywheelError
from dataflywheel.ops import registry
from dataflywheel.ops.base import OpContext


def make(name, **params):
    return registry.get(name)(params, OpContext(seed=0))


TABLE = pa.table(
    {
        "id": ["a", "b", "c", "d", "e"],
        "score_x": [0.5, 4.0, None, 4.5, 5.0],
        "tag_lang": ["en", "de", "en", "fr", "en"],
        "origin": ["p", "p", "q", "q", "q"],
    }
)


def test_filter_min_max_inclusive_and_missing():
    d = make("filter", column="score_x", min=4.0, max=4.5).keep(TABLE)
    assert d.keep.tolist() == [False, True, False, True, False]
    assert d.reason[0] == "score_x not >= 4 and <= 4.5"
    assert d.reason[2] == "score_x is missing"
    assert make("filter", column="score_x", min=4.0, inclusive=False).keep(TABLE).keep.tolist() == [
        False,
        False,
        False,
        True,
        True,
    ]
    assert make("filter", column="score_x", max=1, keep_missing=True).keep(TABLE).keep.tolist() == [
        True,
        False,
        True,
        False,
        False,
    ]


def test_filter_equals_and_one_of():
    assert make("filter", column="tag_lang", equals="en").keep(TABLE).keep.tolist() == [
        True,
        False,
        True,
        False,
        True,
    ]
    assert make("filter", column="tag_lang", one_of=["de", "fr"]).keep(TABLE).keep.tolist() == [
        False,
        True,
        False,
        True,
        False,
    ]


def test_filter_needs_a_condition():
    with pytest.raises(ValidationError, match="at least one of"):
        make("filter", column="x")
    with pytest.raises(ValidationError, match="greater than max"):
        make("filter", column="x", min=2, max=1)


def test_sample_k_fraction_seeded_and_ordered():
    big = pa.table({"id": [str(i) for i in range(100)]})
    a = make("sample", k=10, seed=3).select(big).indices
    assert len(a) == 10 and np.all(np.diff(a) > 0)
    assert a.tolist() == make("sample", k=10, seed=3).select(big).indices.tolist()
    assert a.tolist() != make("sample", k=10, seed=4).select(big).indices.tolist()
    assert len(make("sample", fraction=0.25).select(big).indices) == 25
    assert len(make("sample", k=1000).select(big).indices) == 100
    with pytest.raises(ValidationError, match="exactly one of k, fraction or tokens"):
        make("sample", k=1, fraction=0.5)


def test_sort_stable_nulls_last():
    assert make("sort", by="score_x", descending=True).select(TABLE).indices.tolist() == [4, 3, 1, 0, 2]
    assert make("sort", by="tag_lang").select(TABLE).indices.tolist() == [1, 0, 2, 4, 3]


def test_head():
    assert make("head", n=2).select(TABLE).indices.tolist() == [0, 1]
    assert make("head", n=50).select(TABLE).indices.tolist() == [0, 1, 2, 3, 4]


def test_mix_by_counts_and_weights():
    t = pa.table({"id": [str(i) for i in range(30)], "origin": ["a"] * 10 + ["b"] * 20})
    sel = make("mix", counts={"a": 3, "b": 5}).select(t).indices
    origins = np.array(t.column("origin").to_pylist())[sel]
    assert (origins == "a").sum() == 3 and (origins == "b").sum() == 5
    sel = make("mix", weights={"a": 1, "b": 1}).select(t).indices  # largest mix keeping 1:1 -> 10 + 10
    origins = np.array(t.column("origin").to_pylist())[sel]
    assert (origins == "a").sum() == 10 and (origins == "b").sum() == 10
    sel = make("mix", weights={"a": 1, "b": 2}, total=7).select(t).indices
    origins = np.array(t.column("origin").to_pylist())[sel]
    assert len(sel) == 7 and (origins == "a").sum() == 2  # 7/3 = 2.33 -> 2, b gets 4.67 -> 5
    with pytest.raises(FlywheelError, match="source 'a' has 10 rows, 11 asked"):
        make("mix", counts={"a": 11}).select(t)
    with pytest.raises(FlywheelError, match=r"unknown source\(s\) \['c'\]"):
        make("mix", counts={"c": 1}).select(t)


def test_select_columns_keeps_engine_columns():
    op = make("select_columns", columns=["score_x"])
    assert op.map(TABLE).column_names == ["id", "score_x", "origin"]


def test_rename_and_its_guards():
    op = make("rename", mapping={"score_x": "score_y"})
    assert op.map(TABLE).column_names == ["id", "score_y", "tag_lang", "origin"]
    with pytest.raises(ValidationError, match="cannot rename to or from"):
        make("rename", mapping={"id": "uid"})
    with pytest.raises(ValueError, match="already exist"):
        make("rename", mapping={"score_x": "tag_lang"}).columns_after(TABLE.column_names)
