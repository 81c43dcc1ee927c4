from collections import Counter

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.synthesize.knowledge_guided import KnowledgeGuided, parse_items, parse_review
from tests.fakes import ScriptedBackend, context

REVIEW = "Strengths: clear.\nWeaknesses: too short.\nImprovements: add an example."


def seeds(domains):
    return io.rows_to_table(
        [{S.ID: f"d{i}", S.MESSAGES: [{"role": "user", "content": d}]} for i, d in enumerate(domains)]
    )


def model(review=REVIEW):
    def reply(conv):
        text = conv[-1]["content"]
        if text.startswith("List") and "topics" in text:
            domain = text.split('"')[1]
            return f"1. {domain} basics\n2. {domain} history\n- {domain} basics\n3. {domain} tools\n4. extra"
        if text.startswith("List"):
            topic = text.split('"')[1]
            return f"* {topic} point A\n* {topic} point B"
        if text.startswith("Write one"):
            tag = text.split('"')[1]
            return f"What about {tag}?"
        if text.startswith("Here is a question"):
            return review
        if text.startswith("Improve the answer"):
            return "Refined: " + text.split("Answer:\n", 1)[1].split("\n\n", 1)[0]
        return f"Draft answer to {text}"

    return ScriptedBackend(default=reply)


def test_parsers():
    assert parse_items("1. Alpha\n- Beta\n\n* Gamma\n2) alpha\nb. Delta") == [
        "Alpha",
        "Beta",
        "Gamma",
        "Delta",
    ]
    assert parse_review(REVIEW) == REVIEW
    assert parse_review("Strengths: fine.\nImprovements: none.") is None  # no weaknesses part


def test_tree_questions_and_refined_answers():
    b = model()
    op = KnowledgeGuided({"model": "m", "topics": 3, "tags": 2, "refine_rounds": 1}, ctx=context(m=b))
    rows = list(op.generate(seeds(["Astronomy", "Cooking"])))
    # 2 domains x 3 topics (the duplicate and the 4th item are dropped) x 2 tags
    assert len(rows) == 12
    assert Counter(r["kg_domain"] for r in rows) == {"Astronomy": 6, "Cooking": 6}
    assert {r["kg_topic"] for r in rows if r["kg_domain"] == "Cooking"} == {
        "Cooking basics", "Cooking history", "Cooking tools"
    }  # fmt: skip
    r = rows[0]
    assert r[S.MESSAGES][0]["content"] == f"What about {r['kg_tag']}?"
    assert r["kg_draft"] == f"Draft answer to What about {r['kg_tag']}?"
    assert r[S.MESSAGES][1]["content"] == "Refined: " + r["kg_draft"]
    assert r["kg_critique"] == REVIEW and r[S.PARENTS] == ["d0"]
    assert r["kg_style"] in op.params.styles and r["kg_difficulty"] in op.params.difficulties
    assert op.stats["tree_tags"] == 12 and op.stats["tags_covered"] == 12 and op.stats["questions"] == 12
    # the question prompt names its tag, style and difficulty
    q = next(c[-1]["content"] for c in b.calls if c[-1]["content"].startswith("Write one"))
    assert r["kg_style"] in q or any(s in q for s in op.params.styles)


def test_an_unreadable_review_makes_no_row():
    op = KnowledgeGuided(
        {"model": "m", "topics": 1, "tags": 1}, ctx=context(m=model(review="Looks fine to me."))
    )
    assert list(op.generate(seeds(["Astronomy"]))) == []
    assert op.stats["critique_unread"] == 1 and op.stats["tags_covered"] == 0 and op.stats["tree_tags"] == 1


def test_keep_unrefined_keeps_the_draft_without_a_review():
    op = KnowledgeGuided(
        {"model": "m", "topics": 1, "tags": 2, "keep_unrefined": True}, ctx=context(m=model(review="Fine."))
    )
    rows = list(op.generate(seeds(["Astronomy"])))
    assert len(rows) == 2 and op.stats["critique_unread"] == 2 == op.stats["kept_unrefined"]
    assert op.stats["questions"] == 2
    assert all(r["kg_critique"] is None and r[S.MESSAGES][1]["content"] == r["kg_draft"] for r in rows)


def test_repeated_questions_on_one_tag_are_sampled_together():
    import itertools

    counter = itertools.count()
    inner = model()

    def reply(conv):
        if conv[-1]["content"].startswith("Write one"):
            return f"Question number {next(counter)}?"
        return inner.default(conv)

    b = ScriptedBackend(default=reply)
    op = KnowledgeGuided(
        {"model": "m", "topics": 1, "tags": 1, "questions_per_tag": 3, "styles": ["a direct question"],
         "difficulties": ["easy"]},
        ctx=context(m=b),
    )  # fmt: skip
    rows = list(op.generate(seeds(["Astronomy"])))
    asked = [c[-1]["content"] for c in b.calls if c[-1]["content"].startswith("Write one")]
    assert len(asked) == 1  # one request, n = 3
    assert sorted(r[S.MESSAGES][0]["content"] for r in rows) == [f"Question number {k}?" for k in range(3)]
