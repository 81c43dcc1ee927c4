"""MinHash LSH near-duplicate detection, vectorised with NumPy and pyarrow.

Shingles are word or character n-grams; tokens are hashed once per distinct token (pyarrow dictionary
encoding), n-grams are combined with a polynomial hash, and the ``num_perm`` permutations are the
multiply-add-shift family applied to whole blocks of shingles at once. Banding uses the (bands, rows) pair
that minimises the weighted false-positive and false-negative areas for the threshold (as datasketch
does). Candidate pairs are checked against the threshold with their signatures before they are joined,
and clusters are the connected components of the checked pairs.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

MASK32 = np.uint64(0xFFFFFFFF)
POLY = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier for combining n-grams and band rows
TOKEN = r"[^\p{L}\p{N}_]+"  # separators: anything that is not a letter, digit or underscore


@functools.cache
def optimal_bands(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted FP and FN probabilities."""
    grid = np.linspace(0.0, 1.0, 2001)
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            p = 1.0 - (1.0 - grid**r) ** b  # probability that a pair of similarity s becomes a candidate
            fp = np.trapezoid(np.where(grid <= threshold, p, 0.0), grid)
            fn = np.trapezoid(np.where(grid >= threshold, 1.0 - p, 0.0), grid)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


def token_hashes(texts: list[str], unit: str, lowercase: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint64 hashes of every token (words, or characters) and per-text offsets into them."""
    arr = pa.array(texts, pa.string())
    if lowercase:
        arr = pc.utf8_lower(arr)
    if unit == "word":
        lists = pc.split_pattern_regex(arr, TOKEN)
        flat = pc.list_flatten(lists)
        parents = pc.list_parent_indices(lists)
        keep = pc.not_equal(flat, "")
        flat, parents = pc.filter(flat, keep), pc.filter(parents, keep)
    elif unit == "char":
        chars = [list(t) for t in pc.replace_substring_regex(arr, r"\s+", " ").to_pylist()]
        flat = pa.array([c for cs in chars for c in cs], pa.string())
        parents = pa.array(np.repeat(np.arange(len(chars)), [len(cs) for cs in chars]))
    else:
        raise ValueError(f"unit must be word or char, got {unit!r}")
    encoded = pc.dictionary_encode(flat)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    vocab = encoded.dictionary.to_pylist()
    table = np.fromiter(
        (xxhash.xxh64_intdigest(w.encode()) for w in vocab), dtype=np.uint64, count=len(vocab)
    )
    hashes = table[encoded.indices.to_numpy(zero_copy_only=False)] if len(vocab) else np.zeros(0, np.uint64)
    counts = np.bincount(np.asarray(parents, dtype=np.int64), minlength=len(texts))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return hashes, offsets


def shingle_hashes(tokens: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n-gram hashes per text (a text shorter than n is one shingle) and per-text offsets into them."""
    lengths = np.diff(offsets)
    counts = np.where(lengths >= n, lengths - n + 1, np.minimum(lengths, 1))
    starts = np.repeat(offsets[:-1], counts) + _ranges(counts)
    ends = np.repeat(offsets[1:], counts)
    padded = np.concatenate([tokens, np.zeros(n, dtype=np.uint64)])
    h = np.zeros(len(starts), dtype=np.uint64)
    power = np.uint64(1)
    with np.errstate(over="ignore"):
        for k in range(n):
            term = padded[starts + k] * power
            h += np.where(starts + k < ends, term, np.uint64(0))
            power = power * POLY
    return h, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _ranges(counts: np.ndarray) -> np.ndarray:
    """[0..c0-1, 0..c1-1, ...] without a Python loop."""
    return np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def signatures(
    shingles: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int = 1, block: int = 1 << 10
) -> np.ndarray:
    """(texts, num_perm) uint32 MinHash signatures; a text without shingles gets all-max values."""
    a, b = permutations(num_perm, seed)
    n = len(offsets) - 1
    sig = np.full((n, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    x = (shingles ^ (shingles >> np.uint64(32))) & MASK32  # fold to 32 bits for multiply-add-shift
    doc = 0
    while doc < n:
        # as many whole texts as fit in one block of shingles
        stop = int(np.searchsorted(offsets, offsets[doc] + block, side="right")) - 1
        stop = max(stop, doc + 1)
        lo, hi = offsets[doc], offsets[stop]
        if hi > lo:
            with np.errstate(over="ignore"):
                vals = x[lo:hi, None] * a[None, :]
                vals += b[None, :]
                vals >>= np.uint64(32)
            seg = offsets[doc:stop] - lo
            nonempty = np.diff(offsets[doc : stop + 1]) > 0
            sig[doc:stop][nonempty] = np.minimum.reduceat(vals, seg[nonempty], axis=0)
        doc = stop
    return sig


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(texts, bands) uint64 keys: texts that agree on all rows of a band share its key."""
    n = sig.shape[0]
    view = sig[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    key = np.zeros((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):
            key = key * POLY + view[:, :, r] + np.uint64(1)
    return key


def candidate_pairs(keys: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(pairs, 2) positions sharing a band key: each member with its group's first and its predecessor."""
    edges = []
    idx_all = np.flatnonzero(valid)
    for band in range(keys.shape[1]):
        k = keys[idx_all, band]
        order = np.argsort(k, kind="stable")
        sk, si = k[order], idx_all[order]
        same = sk[1:] == sk[:-1]
        if not same.any():
            continue
        starts = np.concatenate([[True], ~same])
        group_first = si[np.maximum.accumulate(np.where(starts, np.arange(len(si)), 0))]
        member = np.flatnonzero(np.concatenate([[False], same]))
        edges.append(np.stack([group_first[member], si[member]], axis=1))
        edges.append(np.stack([si[member - 1], si[member]], axis=1))
    if not edges:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(edges)
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0)


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components (union-find over the pairs); the label is the smallest member's position."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(pairs) == 0:
        return np.arange(n)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    return first[labels]


def exact_jaccard(
    texts: list[str], pairs: np.ndarray, unit: str, ngram: int, chunk: int = 10_000
) -> np.ndarray:
    """Jaccard similarity of the shingle sets themselves, for candidate pairs, a chunk of pairs at a time
    (only the texts of one chunk have their shingle sets in memory)."""
    out = np.empty(len(pairs), dtype=np.float32)
    for s in range(0, len(pairs), chunk):
        part = pairs[s : s + chunk]
        involved = np.unique(part)
        tok, off = token_hashes([texts[i] for i in involved], unit)
        sh, sh_off = shingle_hashes(tok, off, ngram)
        sets = {int(i): set(sh[sh_off[k] : sh_off[k + 1]].tolist()) for k, i in enumerate(involved)}
        for k, (i, j) in enumerate(part.tolist()):
            a, b = sets[i], sets[j]
            union = len(a | b)
            out[s + k] = len(a & b) / union if union else 0.0
    return out


def estimated_jaccard(sig: np.ndarray, pairs: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    out = np.empty(len(pairs), dtype=np.float32)
    for s in range(0, len(pairs), chunk):
        p = pairs[s : s + chunk]
        out[s : s + chunk] = (sig[p[:, 0]] == sig[p[:, 1]]).mean(axis=1)
    return out


def near_duplicate_clusters(
    texts: list[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    unit: str = "word",
    seed: int = 1,
    verify: str = "exact",
    recall_weight: float = 0.95,
    chunk: int = 5_000,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Cluster label per text (the smallest position in its cluster), the signatures, and the LSH settings.

    ``recall_weight`` is the weight of false negatives when choosing the bands (false positives get the
    rest). datasketch uses 0.5; since every candidate is verified (``exact``: the Jaccard of the shingle
    sets; ``signature``: the MinHash estimate; ``none``: every candidate pair is joined, as datasketch and
    Data-Juicer do), a false candidate costs one comparison, so trading them for recall is cheap.
    """
    n = len(texts)
    sig = np.empty((n, num_perm), dtype=np.uint32)
    nonempty = np.zeros(n, dtype=bool)

    def work(s: int) -> None:  # bounded memory: tokens and shingles exist for one chunk at a time
        sig[s : s + chunk], nonempty[s : s + chunk] = signature_block(
            texts[s : s + chunk], num_perm, ngram, unit, seed
        )

    # NumPy and pyarrow release the GIL in their kernels, so chunks run in parallel on threads.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        list(pool.map(work, range(0, n, chunk)))
    labels, info = clusters_from_signatures(
        texts, sig, nonempty, threshold, ngram, unit, verify, recall_weight
    )
    return labels, sig, info


def signature_block(
    texts: list[str], num_perm: int, ngram: int, unit: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of some texts and whether each had a shingle: each row depends only on its own
    text, so blocks can be computed anywhere (threads, Ray tasks) and stacked."""
    tok, off = token_hashes(texts, unit)
    sh, sh_off = shingle_hashes(tok, off, ngram)
    return signatures(sh, sh_off, num_perm, seed), np.diff(sh_off) > 0


def clusters_from_signatures(
    texts: list[str],
    sig: np.ndarray,
    nonempty: np.ndarray,
    threshold: float,
    ngram: int,
    unit: str,
    verify: str = "exact",
    recall_weight: float = 0.95,
    keys: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """The global step: candidate pairs from the LSH band keys (computed here unless given, e.g. by
    parallel shard tasks), verification, connected components."""
    n, num_perm = sig.shape
    bands, rows = optimal_bands(threshold, num_perm, 1.0 - recall_weight, recall_weight)
    if keys is None:
        keys = band_keys(sig, bands, rows)
    pairs = candidate_pairs(keys, nonempty)
    candidates = len(pairs)
    if verify == "exact" and len(pairs):
        pairs = pairs[exact_jaccard(texts, pairs, unit, ngram) >= threshold]
    elif verify == "signature" and len(pairs):
        pairs = pairs[estimated_jaccard(sig, pairs) >= threshold]
    elif verify not in ("exact", "signature", "none"):
        raise ValueError(f"verify must be exact, signature or none, got {verify!r}")
    labels = components(n, pairs)
    return labels, {
        "bands": bands,
        "rows_per_band": rows,
        "candidate_pairs": candidates,
        "verified_pairs": len(pairs),
    }
