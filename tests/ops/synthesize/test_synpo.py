"""SynPO's parts with scripted models: keywords, the prompter's and improver's training conversations,
and the pairs step (prompt check, policy answer, rewrite, gap filter, lineage)."""

from __future__ import annotations

import math

import pytest

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.synthesize import synpo
from dataflywheel.ops.synthesize.synpo import (
    SynPOImprover,
    SynPOPairs,
    SynPOPrompter,
    keyword_conversations,
    keywords_of,
)
from tests.fakes import ScriptedBackend, context

SEEDS = [
    ("s0", "Explain how photosynthesis turns sunlight into sugar in green plants.", "Plants use light..."),
    ("s1", "Write a haiku about autumn leaves falling in a quiet forest.", "Red leaves drift..."),
    ("s2", "Give me three tips for saving money on groceries.", "Plan meals..."),
    ("s3", "Hi there", "Hello!"),  # no keywords to learn from
]


def seeds_table(seeds=SEEDS):
    return io.rows_to_table(
        [
            {S.ID: sid, S.MESSAGES: [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for sid, q, a in seeds
        ]
    )


def test_keywords_are_content_words_once_in_order():
    assert keywords_of("Explain how Photosynthesis turns sunlight into sugar, photosynthesis!") == [
        "photosynthesis",
        "turns",
        "sunlight",
        "sugar",
    ]
    assert keywords_of("Hi there, can you do it?") == []


def test_the_prompters_conversations_hide_one_noise_keyword_among_the_seeds_own():
    seeds = [(sid, q) for sid, q, _ in SEEDS]
    convs, counts = keyword_conversations(seeds, per_prompt=3, seed=1)
    assert counts == {"seeds_without_keywords": 1} and len(convs) == 3
    for conv, (_, prompt) in zip(convs, seeds, strict=False):
        assert conv[-1] == {"role": "assistant", "content": prompt}
        listed = conv[0]["content"].split("Keywords: ")[1].strip().split(", ")
        own = keywords_of(prompt)
        assert len(listed) == 4 and sum(w not in own for w in listed) == 1  # three own, one noise
        noise = next(w for w in listed if w not in own)
        assert any(noise in keywords_of(q) for _, q in seeds if q != prompt)
    assert keyword_conversations(seeds, 3, seed=1) == (convs, counts)  # seeded: the same every time


@pytest.fixture
def captured(monkeypatch):
    seen = {}

    def fake_train(base, convs, out, settings, progress=None):
        seen["base"], seen["convs"] = base, convs
        return {"examples": len(convs)}

    monkeypatch.setattr(synpo, "train_sft", fake_train)
    monkeypatch.setattr(synpo, "base_path", lambda op: "/models/base")
    return seen


def test_the_prompter_trains_on_keyword_conversations(captured, tmp_path):
    op = SynPOPrompter({"model": "base", "output_model": "prompter"}, context(base=ScriptedBackend()))
    stats = op.train(seeds_table(), tmp_path)
    assert stats == {"examples": 3, "seeds_without_keywords": 1}
    assert [c[-1]["content"] for c in captured["convs"]] == [q for _, q, _ in SEEDS[:3]]


def test_the_improver_learns_to_rewrite_the_policys_answers_into_the_gold_ones(captured, tmp_path):
    policy = ScriptedBackend(script=[("haiku", None)], default=lambda c: "draft for " + c[-1]["content"][:12])
    op = SynPOImprover(
        {"model": "base", "policy": "policy", "output_model": "improver"},
        context(base=ScriptedBackend(), policy=policy),
    )
    stats = op.train(seeds_table(), tmp_path)
    assert (
        stats["failed_policy_answers"] == 1 and stats["seeds_without_gold"] == 0
    )  # the haiku request failed
    convs = captured["convs"]
    assert [c[-1]["content"] for c in convs] == ["Plants use light...", "Plan meals...", "Hello!"]
    first = convs[0][0]["content"]
    assert "Request:\n" + SEEDS[0][1] in first and "Response:\ndraft for Explain how\n" in first


def pairs_world(yes=lambda q: True, better_score=4.0, draft_score=3.0):
    """The prompter writes "Tell me about <keywords>", the policy drafts, the improver writes BETTER; the
    judge says Yes/No for prompts and scores BETTER responses ``better_score``, others ``draft_score``."""

    def prompter(conv):
        words = conv[-1]["content"].split("Keywords: ")[1].strip()
        return f"Tell me about {words}"

    def options(conv, opts):
        text = conv[-1]["content"]
        if opts == ["Yes", "No"]:
            q = text.rsplit("\n\n", 1)[1]
            p = 0.9 if yes(q) else 0.1
            return [math.log(p), math.log(1 - p)]
        score = better_score if "BETTER" in text.split("Response:")[-1] else draft_score
        # all mass on the score's two neighbours, so the expected score is exactly ``score``
        lo = int(score)
        frac = score - lo
        lps = [float("-inf")] * 6
        lps[lo] = math.log(1 - frac) if frac < 1 else float("-inf")
        if frac:
            lps[lo + 1] = math.log(frac)
        return lps

    return context(
        policy=ScriptedBackend(default=lambda c: "draft: " + c[-1]["content"]),
        prompter=ScriptedBackend(default=prompter),
        improver=ScriptedBackend(default=lambda c: "BETTER answer"),
        judge=ScriptedBackend(option_logprobs=options),
    )


def pairs_op(ctx, **params):
    base = {"model": "policy", "prompter": "prompter", "improver": "improver", "judge": "judge", "prompts": 6}
    return SynPOPairs({**base, **params}, ctx)


def test_pairs_prefer_the_rewrite_and_name_the_seeds_their_keywords_came_from():
    op = pairs_op(pairs_world())
    made = list(op.generate(seeds_table()))
    assert len(made) == 6 and op.stats["pairs"] == 6
    pool = {w: sid for sid, q, _ in SEEDS for w in keywords_of(q)}
    for row in made:
        q = row[S.PROMPT][0]["content"]
        words = row["synpo_keywords"].split(", ")
        assert q == "Tell me about " + row["synpo_keywords"] and len(words) == 3
        assert row[S.CHOSEN] == [{"role": "assistant", "content": "BETTER answer"}]
        assert row[S.REJECTED] == [{"role": "assistant", "content": "draft: " + q}]
        assert row["synpo_scores"] == pytest.approx([4.0, 3.0]) and row["score_synpo_gap"] == pytest.approx(
            1.0
        )
        assert row[S.PARENTS] == sorted({pool[w] for w in words})


def test_the_gap_filter_and_the_prompt_check_drop_and_count():
    op = pairs_op(pairs_world(better_score=3.25), gap=0.5)  # a 0.25 gain is not enough
    assert list(op.generate(seeds_table())) == [] and op.stats["gap_too_small"] == 6
    op = pairs_op(pairs_world(better_score=3.25), gap=0.25)
    assert len(list(op.generate(seeds_table()))) == 6
    rejected = pairs_op(pairs_world(yes=lambda q: "photosynthesis" not in q))
    made = list(rejected.generate(seeds_table()))
    assert rejected.stats["prompt_rejected"] == 6 - len(made) > 0
    assert not any("photosynthesis" in r[S.PROMPT][0]["content"] for r in made)


def test_a_keyword_file_replaces_the_seeds_keywords(tmp_path):
    (tmp_path / "words.txt").write_text("volcano\nharbor\nviolin\n\nvolcano\n")
    ctx = pairs_world()
    ctx.base_dir = str(tmp_path)
    made = list(pairs_op(ctx, keywords="words.txt", prompts=2).generate(seeds_table()))
    assert [sorted(r["synpo_keywords"].split(", ")) for r in made] == [["harbor", "violin", "volcano"]] * 2
    assert all(r[S.PARENTS] == [] for r in made)
