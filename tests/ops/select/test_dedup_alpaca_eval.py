"""Dedup on real data: the AlpacaEval pool (12 models' responses to the same 805 instructions, plus
text-davinci-003's), with the duplicates checked by an independent computation."""

from __future__ import annotations

import json
import re
import textwrap

import orjson
import pytest

from dataflywheel.engine.local import LocalExecutor
from dataflywheel.engine.runinfo import drop_log, load_manifest
from dataflywheel.recipe.validate import validate_file

pytestmark = pytest.mark.slow


def shingles(text: str, n: int = 5) -> set:
    w = re.findall(r"[^\W]+", text.lower())
    return {" ".join(w[i : i + n]) for i in range(max(len(w) - n + 1, 1))} if w else set()


def test_exact_and_near_duplicates_in_the_alpaca_eval_pool(tmp_path, shared_data, capsys):
    rows, seen_davinci = [], set()
    for f in sorted((shared_data / "alpaca_eval" / "annotations_alpaca_eval_gpt4").glob("*.json")):
        for r in json.loads(f.read_text()):
            rows.append(
                {"instruction": r["instruction"], "output": r["output_2"], "generator": r["generator_2"]}
            )
            if r["instruction"] not in seen_davinci:
                seen_davinci.add(r["instruction"])
                rows.append(
                    {"instruction": r["instruction"], "output": r["output_1"], "generator": r["generator_1"]}
                )
    rows = [r for r in rows if r["output"].strip()]
    with open(tmp_path / "pool.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: alpaca-eval-dedup
        inputs: [{path: pool.jsonl}]
        shard_size: 2000
        steps:
          - exact_dedup: {field: response}
          - minhash_dedup: {field: response, threshold: 0.8}
    """)
    )
    rec, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems
    result = LocalExecutor(rec, ops, tmp_path / "run", progress=False).run()
    drops = drop_log(tmp_path / "run").to_pylist()
    exact = [d for d in drops if d["op"] == "exact_dedup"]
    near = [d for d in drops if d["op"] == "minhash_dedup"]
    # independent check of the exact groups: normalized responses counted in plain Python
    norm = [" ".join(r["output"].lower().split()) for r in rows]
    assert len(exact) == len(norm) - len(set(norm))
    # independent check of every near-duplicate: the exact Jaccard with the kept row is >= 0.8
    kept = {r["id"]: r for r in (orjson.loads(x) for x in result.output_path.read_bytes().splitlines())}
    for d in near:
        keeper = kept[d["detail"].split("duplicate of ")[1].split(" ")[0]]
        a = shingles(orjson.loads(d["row"])["messages"][-1]["content"])
        b = shingles(keeper["messages"][-1]["content"])
        assert len(a & b) / len(a | b) >= 0.8
    stats = load_manifest(tmp_path / "run")["steps"][2]["stats"]
    with capsys.disabled():
        print(
            f"\nAlpacaEval pool: {len(rows)} responses, {len(exact)} exact duplicates, {len(near)} near "
            f"duplicates (MinHash, J >= 0.8), largest clusters {stats['largest_clusters'][:3]}"
        )
    assert result.rows_out == len(rows) - len(exact) - len(near)
    assert len(exact) > 0 and len(near) > 0
