"""ToxiCraft with a scripted model and placeholder posts (no abusive text): attribute extraction,
recombination across seeds, seed-guided writing, validation, lineage."""

import itertools
import json

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.enhance.toxicraft import ToxiCraft, parse_attributes, parse_check
from tests.fakes import ScriptedBackend, context

KEYS = ["category", "tone"]


def seeds():
    rows = [
        ("h0", "[INSULT] aimed at [GROUP] on a forum", "harmful"),
        ("h1", "[THREAT] against [PERSON] in a comment", "harmful"),
        ("h2", "unreadable seed", "harmful"),
        ("b0", "[PRAISE] for [PERSON] in a review", "benign"),
        ("b1", "[QUESTION] about [TOPIC] on a forum", "benign"),
    ]
    return io.rows_to_table(
        [{S.ID: i, S.MESSAGES: [{"role": "user", "content": t}], "tag_tox": lab} for i, t, lab in rows]
    )


def model(check=lambda post: {"label": post.split(":")[0], "realistic": "yes"}):
    written = itertools.count(1)

    def reply(conv):
        text = conv[-1]["content"]
        if text.startswith("Describe the post"):
            post = text.split("Post: ")[1].split("\n\n")[0]
            if post == "unreadable seed":
                return "I would rather not."
            return json.dumps({"category": f"cat of {post.split()[0]}", "tone": f"tone of {post.split()[0]}"})
        if text.startswith("You help build"):
            label = text.split('label "')[1].split('"')[0]
            return f"{label}: [PLACEHOLDER POST {next(written)}]"
        post = text.split("Post: ")[1].split("\n\n")[0]
        return json.dumps(check(post))

    return ScriptedBackend(default=reply)


def test_parsers():
    assert parse_attributes('Sure: {"category": "x", "tone": ["a", "b"]}', KEYS) == {
        "category": "x",
        "tone": "a, b",
    }
    assert parse_attributes('{"category": "x"}', KEYS) is None
    assert parse_check('{"label": "Harmful", "realistic": "yes"}', ["harmful", "benign"]) == {
        "label": "harmful",
        "realistic": True,
    }
    assert parse_check('{"label": "other", "realistic": "yes"}', ["harmful", "benign"]) is None


def test_stages_recombine_attributes_and_name_parents():
    lm = model()
    op = ToxiCraft(
        {"model": "m", "column": "tag_tox", "per_label": 3, "attributes": KEYS, "examples": 1},
        ctx=context(m=lm),
    )
    made = list(op.generate(seeds()))
    assert sorted(r["tag_tox"] for r in made) == ["benign"] * 3 + ["harmful"] * 3
    assert op.stats["attributes_unparsed"] == 1
    for r in made:
        label = r["tag_tox"]
        assert r[S.MESSAGES][0]["content"].startswith(f"{label}: [PLACEHOLDER POST")
        attrs = json.loads(r["toxicraft_attributes"])
        # every attribute value comes from a seed of the same label, never from the unreadable one
        firsts = {"harmful": {"[INSULT]", "[THREAT]"}, "benign": {"[PRAISE]", "[QUESTION]"}}[label]
        assert {v.split(" of ")[1] for v in attrs.values()} <= firsts
        assert all(p.startswith(label[0]) for p in r[S.PARENTS])
    writes = [c[-1]["content"] for c in lm.calls if c[-1]["content"].startswith("You help build")]
    assert all(w.count("Post: ") == 1 for w in writes)  # examples: 1


def test_validation_drops_relabeled_and_unrealistic_posts():
    verdicts = itertools.cycle(["keep", "flip", "fake", "junk"])

    def check(post):
        v = next(verdicts)
        label = post.split(":")[0]
        other = "benign" if label == "harmful" else "harmful"
        return {"keep": {"label": label, "realistic": "yes"}, "flip": {"label": other, "realistic": "yes"},
                "fake": {"label": label, "realistic": "no"}, "junk": {"nothing": 1}}[v]  # fmt: skip

    op = ToxiCraft(
        {"model": "m", "column": "tag_tox", "per_label": 2, "attributes": KEYS, "max_attempts": 4},
        ctx=context(m=model(check)),
    )
    made = list(op.generate(seeds()))
    assert len(made) == 4
    assert op.stats["label_changed"] >= 1 and op.stats["unrealistic"] >= 1 and op.stats["check_unparsed"] >= 1
    unchecked = ToxiCraft(
        {"model": "m", "column": "tag_tox", "per_label": 2, "attributes": KEYS, "check": False},
        ctx=context(m=model(check)),
    )
    assert len(list(unchecked.generate(seeds()))) == 4 and unchecked.stats["label_changed"] == 0
