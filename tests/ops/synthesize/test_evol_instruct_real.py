"""Evol-Instruct end to end on the real SmolLM2: every evolution is accounted for, survivors chain from
their parents, and each answer is SmolLM2's own greedy answer to the evolved instruction."""

import json

import pytest

from dataflywheel.data import io
from dataflywheel.models.base import Sampling
from dataflywheel.models.client import Model
from dataflywheel.ops.base import OpContext
from dataflywheel.ops.synthesize.evol_instruct import LEAKS, EvolInstruct
from dataflywheel.recipe.models import ModelSpec


@pytest.mark.slow
def test_evol_instruct_on_smollm2(smollm2, shared_data):
    tasks = [
        json.loads(x)
        for x in (shared_data / "self_instruct" / "seed_tasks.jsonl").read_text().splitlines()[:4]
    ]
    seeds = io.rows_to_table(
        [{"id": t["id"], "messages": [{"role": "user", "content": t["instruction"]}]} for t in tasks]
    )
    spec = ModelSpec(backend="hf", model="embedded:smollm2-135m-instruct", cache="off")
    ctx = OpContext(models={"m": Model("m", spec, backend=smollm2)})
    settings = {"model": "m", "rounds": 2, "max_tokens": 32, "response_max_tokens": 32, "seed": 5}
    # with the equality judge, its verdict constrained to "Equal" / "Not Equal": every verdict is read
    op = EvolInstruct(settings, ctx=ctx)
    judged = list(op.generate(seeds))
    evolved = sum(v for k, v in op.stats.items() if k.startswith("evolved_"))
    eliminated = sum(v for k, v in op.stats.items() if k.startswith("eliminated_"))
    assert evolved == len(judged) and evolved + eliminated == 4 * 2  # every instruction, every round
    assert op.stats["equality_unread"] == 0 and op.stats["eliminated_unjudged"] == 0
    assert op.stats["equality_judged"] >= 1  # the defining check ran
    # without it, some evolutions survive the other three rules
    op = EvolInstruct({**settings, "judge_equality": False}, ctx=ctx)
    rows = list(op.generate(seeds))
    evolved = sum(v for k, v in op.stats.items() if k.startswith("evolved_"))
    eliminated = sum(v for k, v in op.stats.items() if k.startswith("eliminated_"))
    assert rows and evolved == len(rows) and evolved + eliminated == 4 * 2
    known = {t["instruction"] for t in tasks} | {r["messages"][0]["content"] for r in rows}
    for r in rows:
        assert r["evol_parent"] in known and r["parents"][0].startswith("seed_task_")
        assert r["messages"][0]["content"] != r["evol_parent"]
        assert not any(leak in r["messages"][0]["content"].lower() for leak in LEAKS)
        # independent: SmolLM2 asked the evolved instruction directly, greedily, answers the same
        (direct,) = smollm2.chat(
            [[{"role": "user", "content": r["messages"][0]["content"]}]], Sampling(max_tokens=32)
        )
        assert r["messages"][1]["content"] == direct.text.strip()
