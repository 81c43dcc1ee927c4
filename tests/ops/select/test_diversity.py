from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dataflywheel.lib.diversity import diverse_greedy, kcenter_greedy
from dataflywheel.ops import registry
from dataflywheel.ops.base import OpContext
from dataflywheel.ops.select.cluster_sample import balanced_quotas


def emb_table(x: np.ndarray, **cols) -> pa.Table:
    flat = pa.array(x.astype(np.float32).ravel(), pa.float32())
    t = pa.table(
        {
            "id": [f"r{i}" for i in range(len(x))],
            "embedding_default": pa.FixedSizeListArray.from_arrays(flat, x.shape[1]),
        }
    )
    for k, v in cols.items():
        t = t.append_column(k, pa.array(v))
    return t


def make(name, **params):
    return registry.get(name)(params, OpContext())


def reference_kcenter(x, k, first):
    """The straightforward loop: full distance recomputation with broadcasting."""
    picks = [first]
    best = ((x - x[first]) ** 2).sum(1)
    while len(picks) < k:
        nxt = int(np.argmax(best))
        picks.append(nxt)
        best = np.minimum(best, ((x - x[nxt]) ** 2).sum(1))
    return np.array(picks)


def test_kcenter_equals_the_reference_loop():
    x = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
    assert kcenter_greedy(x, 40, 3).tolist() == reference_kcenter(x, 40, 3).tolist()


def test_kcenter_covers_separated_clusters():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(5, 8)) * 50
    x = np.concatenate([c + rng.normal(size=(40, 8)) for c in centers]).astype(np.float32)
    sel = make("kcenter_select", k=5, first=0).select(emb_table(x))
    assert sorted(set((sel.indices // 40).tolist())) == [0, 1, 2, 3, 4]  # one pick per cluster


def test_diverse_greedy_never_keeps_two_rows_above_tau():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    x = np.concatenate([x, x[:100] + 0.01 * rng.normal(size=(100, 8))]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for tau in (0.5, 0.9):
        kept = diverse_greedy(x, np.arange(len(x)), tau, block=64)
        sims = x[kept] @ x[kept].T
        np.fill_diagonal(sims, -1)
        assert sims.max() < tau
        rejected = np.setdiff1d(np.arange(len(x)), kept)  # and every rejected row had a reason
        assert (x[rejected] @ x[kept].T).max(axis=1).min() >= tau or len(rejected) == 0
    assert len(diverse_greedy(x, np.arange(len(x)), 0.9, k=10)) == 10


def test_diverse_filter_walks_best_first():
    x = np.array([[1, 0], [1, 0.01], [0, 1]], dtype=np.float32)
    sel = make("diverse_filter", tau=0.9, order_by="score_q").select(emb_table(x, score_q=[0.1, 0.9, 0.5]))
    assert sel.indices.tolist() == [1, 2]


def test_balanced_quotas():
    assert balanced_quotas({"a": 2, "b": 10, "c": 10}, 12) == {"a": 2, "b": 5, "c": 5}
    assert sum(balanced_quotas({"a": 3, "b": 4, "c": 100}, 50).values()) == 50
    assert balanced_quotas({"a": 1, "b": 1}, 5) == {"a": 1, "b": 1}


def test_cluster_sample_balances_clusters():
    rng = np.random.default_rng(3)
    sizes = [200, 30, 20]
    x = np.concatenate([rng.normal(size=(s, 4)) + 100 * i for i, s in enumerate(sizes)]).astype(np.float32)
    sel = make("cluster_sample", k=30, n_clusters=3, within="centroid").select(emb_table(x))
    group = np.repeat([0, 1, 2], sizes)[sel.indices]
    assert sorted(np.bincount(group).tolist()) == [10, 10, 10]
    assert len(set(sel.columns["tag_cluster"].to_pylist())) == 3


def test_semdedup_drops_near_copies_and_keeps_the_rest():
    rng = np.random.default_rng(4)
    base = rng.normal(size=(60, 32)).astype(np.float32)
    copies = base[:15] + 0.02 * rng.normal(size=(15, 32)).astype(np.float32)
    x = np.concatenate([base, copies])
    sel = make("semdedup", threshold=0.95, n_clusters=4).select(emb_table(x))
    assert len(sel.indices) == 60
    dropped = set(range(75)) - set(sel.indices.tolist())
    pairs = {i: int(d.split("duplicate of r")[1].split(" ")[0]) for i, d in sel.details.items()}
    assert all({i, pairs[i]} <= set(range(15)) | set(range(60, 75)) for i in dropped)
    assert all(abs(i - pairs[i]) == 60 for i in dropped)  # each copy matched to its own original


@pytest.mark.parametrize("name", ["kcenter_select", "cluster_sample"])
def test_budget_must_be_given_once(name):
    with pytest.raises(Exception, match="exactly one of k, fraction or tokens"):
        make(name)


def test_semdedup_keeps_the_duplicate_farthest_from_the_centroid_by_default():
    # one cluster: a tight group around the centroid, and a pair of near-duplicates at different
    # distances from it; the paper keeps the farther one ("hard" prototype), `keep: nearest` the other
    rng = np.random.default_rng(5)
    centre = np.zeros(16, dtype=np.float32)
    centre[0] = 1.0
    group = centre + 0.3 * rng.normal(size=(20, 16)).astype(np.float32)
    near = centre.copy()
    near[1] = 0.9  # cosine to the centre ~0.74
    far = centre.copy()
    far[1] = 0.98  # cosine ~0.71: farther, and ~0.999 similar to `near`
    x = np.concatenate([group, near[None], far[None]]).astype(np.float32)
    default = make("semdedup", threshold=0.99, n_clusters=1).select(emb_table(x))
    assert 21 in default.indices and 20 not in default.indices
    nearest = make("semdedup", threshold=0.99, n_clusters=1, keep="nearest").select(emb_table(x))
    assert 20 in nearest.indices and 21 not in nearest.indices


def test_kcenter_picks_distinct_rows_when_embeddings_repeat():
    x = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 12 rows, 3 distinct points
    picks = kcenter_greedy(x, 7, 0)
    assert len(set(picks.tolist())) == 7
    assert sorted({int(i) // 4 for i in picks[:3]}) == [0, 1, 2]  # the 3 distinct points come first
    sel = make("kcenter_select", k=7, first=0).select(emb_table(x))
    assert len(np.unique(sel.indices)) == 7
