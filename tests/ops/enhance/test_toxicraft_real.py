"""ToxiCraft through the engine with the real SmolLM2, on placeholder seeds, its attribute and check replies
constrained to their JSON shapes: every reply is read; posts are written from attributes of
seeds of their own label (recomputed by separate calls), and every post the check keeps passes the check
asked again."""

import json

import pytest

from dataflywheel.models.base import Sampling
from dataflywheel.ops import prompts
from dataflywheel.ops.enhance.toxicraft import (
    _prompt,
    attributes_prompt,
    attributes_shape,
    check_shape,
    parse_attributes,
    parse_check,
)
from tests.conftest import run_recipe

SEEDS = [
    ("h0", "You people from [GROUP] are all [INSULT], get off this forum.", "harmful"),
    ("h1", "I will find where [PERSON] lives and [THREAT].", "harmful"),
    ("b0", "Thanks [PERSON], the recipe you posted worked great for my family.", "benign"),
    ("b1", "Does anyone know when the [TOPIC] meetup starts on Saturday?", "benign"),
]
KEYS = ["category", "tone"]


def run(folder, name: str, check: bool):
    result, manifest = run_recipe(
        folder,
        f"""
        version: 1
        name: toxicraft
        inputs: [{{path: seeds.jsonl}}]
        models: {{lm: {{backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}}}}
        steps:
          - toxicraft: {{model: lm, column: tag_tox, per_label: 2, attributes: [category, tone], examples: 1,
                         max_tokens: 32, keep_seeds: false, check: {str(check).lower()}}}
        output: {{path: {name}.jsonl}}
        """,
        name=name,
        run=name,
    )
    rows = [json.loads(x) for x in open(result.output_path)]
    return rows, manifest["steps"][-1]["stats"]["counts"]


@pytest.mark.slow
def test_toxicraft_writes_posts_from_recombined_attributes(tmp_path, smollm2):
    with open(tmp_path / "seeds.jsonl", "w") as f:
        for sid, text, label in SEEDS:
            f.write(json.dumps({"id": sid, "instruction": text, "tag_tox": label}) + "\n")
    unchecked, _ = run(tmp_path, "unchecked", check=False)
    checked, counts = run(tmp_path, "checked", check=True)
    # the defining steps: every seed's attributes read, every written post's check read
    assert counts.get("attributes_unparsed", 0) == 0 and counts.get("check_unparsed", 0) == 0
    checks = sum(counts.get(k, 0) for k in ("label_changed", "unrealistic")) + len(checked)
    assert checks >= 1  # posts were written and checked
    # the attributes of each seed, recomputed by a separate greedy call under the same shape
    described = {}
    for sid, text, _ in SEEDS:
        (reply,) = smollm2.chat(
            [[{"role": "user", "content": attributes_prompt(text, KEYS)}]],
            Sampling(max_tokens=64, constraint=attributes_shape(KEYS)),
        )
        described[sid] = parse_attributes(reply.text, KEYS)
        assert described[sid] is not None
    label_of = {sid: label for sid, _, label in SEEDS}
    assert unchecked, "SmolLM2 writes at least one post that is not cut off"
    for r in unchecked + checked:
        label = r["tag_tox"]
        attrs = json.loads(r["toxicraft_attributes"])
        sources = [sid for sid, d in described.items() if d and label_of[sid] == label]
        for k, v in attrs.items():
            assert v in {described[s][k] for s in sources}
        assert all(label_of[p] == label for p in r["parents"])
    for r in checked:  # a kept post passes the same check asked again, separately
        ask = prompts.fill(_prompt("check"), labels="benign, harmful", text=r["messages"][0]["content"])
        shaped = Sampling(max_tokens=48, constraint=check_shape(["benign", "harmful"]))
        (reply,) = smollm2.chat([[{"role": "user", "content": ask}]], shaped)
        assert parse_check(reply.text, ["benign", "harmful"]) == {"label": r["tag_tox"], "realistic": True}
