import itertools
from collections import Counter

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.synthesize.blind_spots import BlindSpots
from tests.fakes import ScriptedBackend, context


def seeds(n):
    return io.rows_to_table(
        [
            {S.ID: f"q{i}", S.MESSAGES: [{"role": "user", "content": f"What is {i} + {i}?"},
                                          {"role": "assistant", "content": f"It is {2 * i}."}]}
            for i in range(n)
        ]
    )  # fmt: skip


def student():
    """Right on even numbers, wrong on odd ones."""

    def reply(conv):
        i = int(conv[-1]["content"].split()[2])
        return f"It is {2 * i}." if i % 2 == 0 else f"It is {2 * i + 1}."

    return ScriptedBackend(default=reply)


def teacher(agree=True):
    count = itertools.count()
    asked = Counter()

    def reply(conv):
        text = conv[-1]["content"]
        if text.startswith("A student model"):
            return f"New question {next(count)}: what is 5 + 5?"
        # the greedy answer, then the sampled check answer: with agree=False, questions 1 and 3 get two
        # different answers
        asked[text] += 1
        n = int(text.split()[2].rstrip(":"))
        return "Ten, so 10." if agree or n % 2 == 0 or asked[text] == 1 else "Maybe 11."

    return ScriptedBackend(default=reply)


def test_failures_are_clustered_targeted_and_verified():
    t = teacher()
    op = BlindSpots(
        {"model": "t", "student": "s", "embedder": "e", "clusters": 2, "per_cluster": 2, "examples": 2},
        ctx=context(t=t, s=student(), e=ScriptedBackend()),
    )
    rows = list(op.generate(seeds(16)))  # the scripted embedder sees lengths: 1-9 and 11-15 differ
    assert op.stats["student_failures"] == 8 and op.stats["clusters"] == 2
    assert len(rows) == 4 and op.stats["unverified"] == 0
    failed = {f"q{i}" for i in range(1, 16, 2)}
    for r in rows:
        assert set(r[S.PARENTS]) <= failed and 1 <= len(r[S.PARENTS]) <= 2
        assert r[S.MESSAGES][1]["content"] == "Ten, so 10."
        assert r["blindspot_cluster"] in (0, 1)
    assert sum({r["blindspot_cluster"]: r["blindspot_cluster_size"] for r in rows}.values()) == 8
    for r in rows:  # each prompt showed failures of its own cluster: same question length
        assert len({len(f"What is {int(p[1:])} + {int(p[1:])}?") for p in r[S.PARENTS]}) == 1
    # the teacher was shown the failed questions only
    prompts = [c[-1]["content"] for c in t.calls if c[-1]["content"].startswith("A student model")]
    assert 2 <= len(prompts) <= 4 and not any(
        f"What is {i} + {i}?" in p for p in prompts for i in range(0, 16, 2)
    )


def test_disagreeing_answers_are_not_kept():
    op = BlindSpots(
        {"model": "t", "student": "s", "embedder": "e", "clusters": 1, "per_cluster": 4},
        ctx=context(t=teacher(agree=False), s=student(), e=ScriptedBackend()),
    )
    rows = list(op.generate(seeds(4)))
    assert op.stats["unverified"] == 2 and [r[S.MESSAGES][0]["content"][:14] for r in rows] == [
        "New question 0", "New question 2"
    ]  # fmt: skip


def right(conv):
    return f"It is {2 * int(conv[-1]['content'].split()[2])}."


def test_a_perfect_student_needs_nothing():
    op = BlindSpots(
        {"model": "t", "student": "s", "embedder": "e"},
        ctx=context(t=teacher(), s=ScriptedBackend(default=right), e=ScriptedBackend()),
    )
    assert list(op.generate(seeds(4))) == [] and op.stats["student_failures"] == 0
