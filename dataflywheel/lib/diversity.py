"""Diversity primitives over embedding matrices (rows L2-normalised unless said otherwise)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def matrix(table: pa.Table, column: str) -> np.ndarray:
    """An embedding column as an (n, d) float32 matrix."""
    col = table.column(column).combine_chunks()
    if not pa.types.is_fixed_size_list(col.type) and not pa.types.is_list(col.type):
        raise ValueError(f"column '{column}' is not an embedding (a list of floats)")
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(col), -1) if len(col) else np.zeros((0, 0), dtype=np.float32)


def kcenter_greedy(x: np.ndarray, k: int, first: int = 0, block: int = 65_536) -> np.ndarray:
    """Farthest-first traversal (Gonzalez 1985): each pick is the row farthest (in L2) from all picks so far.

    Picks are distinct rows even when rows repeat (after every distinct point is taken, the remaining
    duplicates follow in position order). Squared distances come from ||x||^2 - 2 x.c + ||c||^2, one
    matrix-vector product per pick, so the matrix is read once per pick and no (n, d) temporary is ever made.
    """
    n = x.shape[0]
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    norms = np.einsum("ij,ij->i", x, x)
    picks = np.empty(k, dtype=np.int64)
    picks[0] = first
    best = np.full(n, np.inf, dtype=np.float32)
    for t in range(1, k + 1):
        c = x[picks[t - 1]]
        d = norms - 2.0 * (x @ c) + norms[picks[t - 1]]
        np.minimum(best, d, out=best)
        best[picks[t - 1]] = -np.inf  # never again: with duplicated rows every distance can reach 0
        if t == k:
            break
        picks[t] = int(np.argmax(best))
    return picks


def diverse_greedy(
    x: np.ndarray, order: np.ndarray, tau: float, k: int | None = None, block: int = 256
) -> np.ndarray:
    """Walk rows in `order` and keep a row when its cosine to every kept row is below tau (DEITA's
    Repr Filter). Candidates are compared with the kept set a block at a time (one matrix product), then
    within the block one by one."""
    limit = len(order) if k is None else min(k, len(order))
    kept: list[int] = []
    kept_mat = np.zeros((0, x.shape[1]), dtype=np.float32)
    for s in range(0, len(order), block):
        if len(kept) >= limit:
            break
        cand = order[s : s + block]
        sims_kept = (x[cand] @ kept_mat.T).max(axis=1) if len(kept) else np.full(len(cand), -np.inf)
        new: list[int] = []
        for j, row in enumerate(cand):
            if sims_kept[j] >= tau:
                continue
            if new and float((x[new] @ x[row]).max()) >= tau:
                continue
            new.append(int(row))
            if len(kept) + len(new) >= limit:
                break
        kept += new
        kept_mat = np.vstack([kept_mat, x[new]]) if new else kept_mat
    return np.asarray(kept, dtype=np.int64)


def kmeanspp(x: np.ndarray, n_clusters: int, seed: int = 0, sample: int = 20_000) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii 2007) on a sample: each new seed is drawn with
    probability proportional to its squared distance from the seeds so far, so small, far clusters get a
    seed instead of being merged (faiss's own seeding is uniform)."""
    rng = np.random.default_rng(seed)
    pts = x if len(x) <= sample else x[rng.choice(len(x), sample, replace=False)]
    seeds = [pts[rng.integers(len(pts))]]
    d2 = ((pts - seeds[0]) ** 2).sum(1)
    for _ in range(1, n_clusters):
        total = d2.sum()
        nxt = pts[rng.choice(len(pts), p=d2 / total)] if total > 0 else pts[rng.integers(len(pts))]
        seeds.append(nxt)
        d2 = np.minimum(d2, ((pts - nxt) ** 2).sum(1))
    return np.ascontiguousarray(np.stack(seeds), dtype=np.float32)


def kmeans(x: np.ndarray, n_clusters: int, seed: int = 0, iters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """faiss k-means from k-means++ seeds: (labels, centroids)."""
    try:
        import faiss
    except ImportError:
        raise ImportError("clustering needs faiss: pip install faiss-cpu") from None
    x = np.ascontiguousarray(x, dtype=np.float32)
    n_clusters = max(1, min(n_clusters, x.shape[0]))
    # min_points_per_centroid=1: small sets are clustered without faiss's "provide more points" warning
    km = faiss.Kmeans(
        x.shape[1], n_clusters, niter=iters, seed=seed, verbose=False, min_points_per_centroid=1
    )
    km.train(x, init_centroids=kmeanspp(x, n_clusters, seed))
    _, labels = km.index.search(x, 1)
    return labels.ravel().astype(np.int64), km.centroids


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Positions in ``base`` of each query's k most cosine-similar rows, most similar first (faiss exact
    inner product over unit vectors); k is cut to the rows there are."""
    import faiss

    def unit(v: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(normalize(np.asarray(v, dtype=np.float32)), dtype=np.float32)

    index = faiss.IndexFlatIP(base.shape[1])
    index.add(unit(base))
    _, found = index.search(unit(queries), min(k, len(base)))
    return found
