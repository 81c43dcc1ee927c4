from hypothesis import given, settings
from hypothesis import strategies as st

from dataflywheel.lib.edit import edit_distance


def reference(a: str, b: str) -> int:
    """The textbook dynamic-programming table."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="abcde ", max_size=40), st.text(alphabet="abcde ", max_size=40))
def test_equals_the_dynamic_programming_table(a, b):
    assert edit_distance(a, b) == reference(a, b)


def test_known_distances():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 == edit_distance("abc", "")
    assert edit_distance("flaw", "lawn") == 2
    long = "x" * 300 + "y" * 300
    assert edit_distance(long, long[::-1]) == reference(long, long[::-1])
