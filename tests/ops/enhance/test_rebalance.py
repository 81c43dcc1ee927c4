"""Synthetic oversampling with a scripted model: balance, validation, lineage, the fine-tuning rows."""

import itertools

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.enhance.rebalance import GroupConditioned, Oversample, condition_prompt, parse_example
from tests.fakes import ScriptedBackend, context


def seeds(counts, column="tag_label"):
    rows = []
    for group, n in counts.items():
        for i in range(n):
            rows.append(
                {
                    S.ID: f"{group}{i}",
                    S.MESSAGES: [{"role": "user", "content": f"{group} text {i}"}],
                    column: group,
                }
            )
    rows.append({S.ID: "x", S.MESSAGES: [{"role": "user", "content": "no group"}], column: None})
    return io.rows_to_table(rows)


def test_parse_example():
    assert parse_example('Example: "A new one."') == {"text": "A new one."}
    assert parse_example("New example 4: plain") == {"text": "plain"}
    assert parse_example("Example 1: a\nExample 2: b") is None
    assert parse_example("  ") is None


def writer(bad=()):
    """Writes "<group> new <k>" for the group its prompt names; the k-th replies in ``bad`` are broken."""
    made = itertools.count(1)

    def reply(conv):
        k = next(made)
        group = conv[-1]["content"].split('group "')[1].split('"')[0]
        if k in bad:
            return {1: "", 2: f"{group} text 0", 3: "Example 1: x\nExample 2: y"}[bad[k]]
        return f"{group} new {k}"

    return reply


def test_oversample_balances_every_group_and_names_what_it_was_shown():
    # the 2nd reply is empty, the 3rd copies a seed, the 4th writes two examples: all dropped, retried
    lm = ScriptedBackend(default=writer({2: 1, 3: 2, 4: 3}))
    op = Oversample({"model": "m", "column": "tag_label", "examples": 2, "batch": 1}, ctx=context(m=lm))
    data = seeds({"big": 6, "mid": 4, "small": 1})
    made = list(op.generate(data))
    by_group = {g: [r for r in made if r["tag_label"] == g] for g in ("big", "mid", "small")}
    assert {g: len(v) for g, v in by_group.items()} == {"big": 0, "mid": 2, "small": 5}
    for r in made:
        group = r["tag_label"]
        assert r["oversample_group"] == group and r[S.MESSAGES][0]["content"].startswith(f"{group} new")
        assert 1 <= len(r[S.PARENTS]) <= 2 and all(p.startswith(group) for p in r[S.PARENTS])
    assert op.stats["unparsed"] == 2 and op.stats["duplicate"] == 1 and op.stats["ungrouped"] == 1
    assert op.stats["target"] == 6
    shown = [c[-1]["content"] for c in lm.calls]
    assert all(s.count("Example ") == (1 if "small" in s else 2) for s in shown)


def test_augment_adds_to_every_group_and_attempts_are_bounded():
    lm = ScriptedBackend(default=writer())
    op = Oversample({"model": "m", "column": "tag_label", "augment": 2, "examples": 0}, ctx=context(m=lm))
    made = list(op.generate(seeds({"a": 3, "b": 1})))
    assert sorted(r["tag_label"] for r in made) == ["a", "a", "b", "b", "b", "b"]
    assert all(r[S.PARENTS] == [] for r in made)  # conditioned on the group's name only
    assert {c[-1]["content"] for c in lm.calls} == {condition_prompt("a", []), condition_prompt("b", [])}
    stuck = ScriptedBackend(default="a text 0")  # only ever repeats a seed
    op = Oversample({"model": "m", "column": "tag_label", "max_attempts": 2}, ctx=context(m=stuck))
    assert list(op.generate(seeds({"a": 3, "b": 1}))) == []
    assert op.stats["short:b"] == 2 and len(stuck.calls) <= 4
    # each retry asks with a new seed: the same seeded request would get the cached sample again
    asked = [s.seed for s in stuck.samplings]
    assert len(asked) == 2 and len(set(asked)) == 2


def test_cut_off_replies_are_dropped():
    lm = ScriptedBackend(default=writer(), finish="length")
    op = Oversample({"model": "m", "column": "tag_label", "max_attempts": 1}, ctx=context(m=lm))
    assert list(op.generate(seeds({"a": 2, "b": 1}))) == [] and op.stats["cut_off"] == 1


def test_group_conditioned_training_rows_match_the_generation_prompt():
    out = GroupConditioned({"column": "tag_label"}).map(seeds({"a": 1})).to_pylist()
    assert out[0][S.MESSAGES] == [
        {"role": "user", "content": condition_prompt("a", [])},
        {"role": "assistant", "content": "a text 0"},
    ]
    assert out[1][S.MESSAGES] == [{"role": "user", "content": "no group"}]  # nothing to condition on
