"""ToxiCraft through the engine with the real SmolLM2, on placeholder seeds: every kept post is recomputed
as valid by an independent check call, and its attributes come from seeds of its label."""

import json
import textwrap

import pytest

from dataflywheel.engine.local import LocalExecutor
from dataflywheel.models.base import Sampling
from dataflywheel.ops import prompts
from dataflywheel.ops.enhance.toxicraft import _prompt, parse_attributes, parse_check
from dataflywheel.recipe.validate import validate_file

SEEDS = [
    ("h0", "You people from [GROUP] are all [INSULT], get off this forum.", "harmful"),
    ("h1", "I will find where [PERSON] lives and [THREAT].", "harmful"),
    ("b0", "Thanks [PERSON], the recipe you posted worked great for my family.", "benign"),
    ("b1", "Does anyone know when the [TOPIC] meetup starts on Saturday?", "benign"),
]
KEYS = ["category", "tone"]


@pytest.mark.slow
def test_toxicraft_writes_checked_posts_from_recombined_attributes(tmp_path, smollm2):
    with open(tmp_path / "seeds.jsonl", "w") as f:
        for sid, text, label in SEEDS:
            f.write(json.dumps({"id": sid, "instruction": text, "tag_tox": label}) + "\n")
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent("""
        version: 1
        name: toxicraft
        inputs: [{path: seeds.jsonl}]
        models: {lm: {backend: hf, model: 'embedded:smollm2-135m-instruct', device: cpu}}
        steps:
          - toxicraft: {model: lm, column: tag_tox, per_label: 2, attributes: [category, tone], examples: 1,
                        max_tokens: 32, keep_seeds: false}
        output: {path: out.jsonl}
        """)
    )
    recipe, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems, problems
    result = LocalExecutor(recipe, ops, tmp_path / "run", progress=False).run()
    made = [json.loads(x) for x in open(result.output_path)]
    # the attributes of each seed, recomputed by a separate greedy call
    described = {}
    for sid, text, _ in SEEDS:
        ask = prompts.fill(_prompt("attributes"), keys=", ".join(KEYS), text=text)
        (reply,) = smollm2.chat([[{"role": "user", "content": ask}]], Sampling(max_tokens=64))
        described[sid] = parse_attributes(reply.text, KEYS)
    assert any(described.values()), "SmolLM2 describes at least one placeholder seed as JSON"
    label_of = {sid: label for sid, _, label in SEEDS}
    for r in made:
        label = r["tag_tox"]
        attrs = json.loads(r["toxicraft_attributes"])
        sources = [sid for sid, d in described.items() if d and label_of[sid] == label]
        for k, v in attrs.items():
            assert v in {described[s][k] for s in sources}
        assert all(label_of[p] == label for p in r["parents"])
        check = prompts.fill(_prompt("check"), labels="benign, harmful", text=r["messages"][0]["content"])
        (reply,) = smollm2.chat([[{"role": "user", "content": check}]], Sampling(max_tokens=48))
        assert parse_check(reply.text, ["benign", "harmful"]) == {"label": label, "realistic": True}
    counts = json.loads((tmp_path / "run" / "manifest.json").read_text())["steps"][-1]["stats"]["counts"]
    dropped = sum(counts.get(k, 0) for k in ("label_changed", "unrealistic", "check_unparsed", "duplicate"))
    assert len(made) + dropped + counts.get("cut_off", 0) + counts.get("unparsed", 0) >= 1
