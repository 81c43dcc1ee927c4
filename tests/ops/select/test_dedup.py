from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from dataflywheel.data import io
from dataflywheel.lib import minhash
from dataflywheel.ops import registry
from dataflywheel.ops.base import OpContext


def table(responses, scores=None):
    rows = [
        {"id": f"r{i}", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": r}]}
        for i, r in enumerate(responses)
    ]
    t = io.rows_to_table(rows)
    return t.append_column("score_q", pa.array(scores, pa.float64())) if scores else t


def make(name, **params):
    return registry.get(name)(params, OpContext())


def test_exact_dedup_normalizes_and_keeps_first_or_best():
    t = table(["Hello  World", "hello world", "Hello, world!", "other", "HELLO WORLD"], [1, 5, 9, 0, 5])
    sel = make("exact_dedup", field="response").select(t)
    assert sel.indices.tolist() == [0, 2, 3]
    assert sel.details[1] == "duplicate of r0 (similarity 1.00)"
    assert sel.columns["tag_exact_cluster"].to_pylist() == ["r0", "r0", "r2", "r3", "r0"]
    assert sel.columns["score_exact_cluster_size"].to_pylist() == [3, 3, 1, 1, 3]
    punct = make("exact_dedup", field="response", ignore_punctuation=True, keep_best="score_q").select(t)
    assert punct.indices.tolist() == [2, 3]  # all four 'hello world's are one group; r2 scores best
    assert punct.stats["duplicate_rows"] == 3


def test_optimal_bands_match_known_values():
    assert minhash.optimal_bands(0.8, 128) == (9, 13)
    b, r = minhash.optimal_bands(0.5, 128)
    assert b * r <= 128 and b > 9


def jaccard(a: str, b: str, n: int = 5) -> float:
    def sh(t):
        w = t.lower().split()
        return {" ".join(w[i : i + n]) for i in range(max(len(w) - n + 1, 1))}

    x, y = sh(a), sh(b)
    return len(x & y) / len(x | y)


def test_signatures_estimate_jaccard():
    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]
    base = [rng.choice(words) for _ in range(200)]
    for edits in (2, 10, 40):
        other = list(base)
        for _ in range(edits):
            other[rng.randrange(200)] = rng.choice(words)
        a, b = " ".join(base), " ".join(other)
        tok, off = minhash.token_hashes([a, b], "word")
        sh, sh_off = minhash.shingle_hashes(tok, off, 5)
        sig = minhash.signatures(sh, sh_off, 256)
        est = (sig[0] == sig[1]).mean()
        assert abs(est - jaccard(a, b)) < 0.08, (edits, est, jaccard(a, b))


def test_shingles_of_short_texts_and_text_boundaries():
    tok, off = minhash.token_hashes(["a b", "", "c d e f g h"], "word")
    assert off.tolist() == [0, 2, 2, 8]
    sh, sh_off = minhash.shingle_hashes(tok, off, 5)
    assert np.diff(sh_off).tolist() == [1, 0, 2]  # short text: one shingle; empty: none; 6 words: 2
    tok2, off2 = minhash.token_hashes(["c d e f g h"], "word")
    sh2, _ = minhash.shingle_hashes(tok2, off2, 5)
    assert sh[1:].tolist() == sh2.tolist()  # shingles never cross into the neighbouring text


def test_minhash_dedup_finds_injected_near_duplicates():
    rng = random.Random(1)
    vocab = [f"token{i}" for i in range(2000)]
    originals = [" ".join(rng.choice(vocab) for _ in range(80)) for _ in range(60)]
    texts, truth = list(originals), {}
    for k in range(20):
        w = originals[k].split()
        w[rng.randrange(80)] = "edited"
        truth[len(texts)] = k
        texts.append(" ".join(w))
    sel = make("minhash_dedup", field="response").select(table(texts))
    dropped = set(range(len(texts))) - set(sel.indices.tolist())
    assert dropped == set(truth)  # every injected copy found, no original lost
    tags = sel.columns["tag_minhash_cluster"].to_pylist()
    assert all(tags[i] == f"r{k}" for i, k in truth.items())
    assert sel.stats["clusters_with_duplicates"] == 20


def test_minhash_shard_features_give_the_same_clusters_as_one_pass():
    """Signatures and band keys computed shard by shard (as executors do) change nothing."""
    rng = random.Random(2)
    vocab = [f"w{i}" for i in range(500)]
    base = [" ".join(rng.choice(vocab) for _ in range(40)) for _ in range(50)]
    texts = base + [b.replace(b.split()[3], "changed", 1) for b in base[:15]]
    rng.shuffle(texts)
    whole = table(texts)
    op = make("minhash_dedup", field="response", threshold=0.7)
    direct = op.select(whole)
    parts = []
    for lo in range(0, whole.num_rows, 17):  # uneven shards
        part = whole.slice(lo, 17)
        extra = op.shard_features(part)
        for name, values in extra.items():
            part = part.append_column(name, values)
        parts.append(part)
    sharded = op.select(io.concat(parts))
    assert sharded.indices.tolist() == direct.indices.tolist() and len(direct.indices) < len(texts)
    assert sharded.details == direct.details and sharded.stats == direct.stats
    for name in direct.columns:
        assert sharded.columns[name].equals(direct.columns[name])


def test_minhash_keep_best_and_char_shingles():
    texts = ["the cat sat on the mat today", "the cat sat on the mat today!", "dogs bark loudly at night"]
    sel = make("minhash_dedup", field="response", unit="char", ngram=3, keep_best="score_q").select(
        table(texts, [0.1, 0.9, 0.5])
    )
    assert sel.indices.tolist() == [1, 2]


@pytest.mark.parametrize("name", ["exact_dedup", "minhash_dedup"])
def test_dedup_in_a_recipe_accounts_for_every_row(tmp_path, name):
    import textwrap

    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.engine.runinfo import drop_log, load_manifest
    from dataflywheel.recipe.validate import validate_file
    from tests.conftest import write_jsonl

    rows = [
        {"instruction": f"question {i % 7}", "output": f"the same long answer number {i % 7} " * 4}
        for i in range(30)
    ]
    write_jsonl(tmp_path / "p.jsonl", rows)
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent(f"""
        version: 1
        name: d
        inputs: [{{path: p.jsonl}}]
        shard_size: 8
        steps:
          - {name}: {{}}
    """)
    )
    rec, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems
    result = LocalExecutor(rec, ops, tmp_path / "run", progress=False).run()
    assert result.rows_out == 7
    drops = drop_log(tmp_path / "run")
    assert drops.num_rows == 23 and all(
        d.startswith("duplicate of ") for d in drops.column("detail").to_pylist()
    )
    kind = name.split("_")[0]
    step = load_manifest(tmp_path / "run")["steps"][1]
    reason = "exact duplicate" if kind == "exact" else "near-duplicate (minhash)"
    assert step["stats"]["duplicate_rows"] == 23 and step["dropped"] == {reason: 23}
    import orjson

    out = [orjson.loads(x) for x in result.output_path.read_bytes().splitlines()]
    assert sorted(r[f"score_{kind}_cluster_size"] for r in out) == [4, 4, 4, 4, 4, 5, 5]
    # the drop log keeps what the selector saw of each dropped row: its cluster, named by the kept row
    kept = {r["id"] for r in out}
    for row, detail in zip(drops.column("row").to_pylist(), drops.column("detail").to_pylist(), strict=True):
        cluster = orjson.loads(row)[f"tag_{kind}_cluster"]
        assert cluster in kept and detail.startswith(f"duplicate of {cluster} ")
