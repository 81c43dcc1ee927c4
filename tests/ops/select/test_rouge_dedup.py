import pyarrow as pa
from rouge_score import rouge_scorer

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.ops.select.rouge_dedup import RougeDedup

TEXTS = [
    "Give three reasons why people enjoy gardening in the spring.",
    "Give three reasons why people enjoy gardening in spring.",  # near-copy of 0
    "Translate the sentence into Spanish.",
    "Please give three reasons why people enjoy gardening in the spring.",  # near-copy of 0
    "Write a haiku about the sea at night.",
]


def table(texts, quality=None, column=None):
    rows = []
    for i, t in enumerate(texts):
        row = {
            S.ID: f"r{i}",
            S.MESSAGES: [{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}],
        }
        if quality is not None:
            row["quality"] = quality[i]
        if column is not None:
            row["instruction"] = column[i]
        rows.append(row)
    return io.rows_to_table(rows)


def test_keeps_the_first_of_each_near_copy_and_no_kept_pair_exceeds_the_threshold():
    sel = RougeDedup({}).select(table(TEXTS))
    assert sel.indices.tolist() == [0, 2, 4]
    assert sel.details[1].startswith("duplicate of r0 (similarity 0.9")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    kept = [TEXTS[i] for i in sel.indices]
    assert all(scorer.score(a, b)["rougeL"].fmeasure <= 0.7 for a in kept for b in kept if a != b)
    # the dropped ones were above it
    assert all(scorer.score(TEXTS[0], TEXTS[i])["rougeL"].fmeasure > 0.7 for i in (1, 3))


def test_keep_best_prefers_the_higher_score_within_a_cluster():
    sel = RougeDedup({"keep_best": "quality"}).select(table(TEXTS, quality=[0.1, 0.9, 0.5, 0.2, 0.3]))
    assert sorted(sel.indices.tolist()) == [1, 2, 4]


def test_column_where_present_else_the_field():
    # the column says rows 0 and 1 are different tasks (their user turns hold inputs that differ)
    col = ["Sort the numbers.", "Name the capital of the country.", None, None, None]
    sel = RougeDedup({"column": "instruction"}).select(table(TEXTS, column=col))
    assert sel.indices.tolist() == [0, 1, 2, 3, 4]
    assert isinstance(sel.columns["tag_rouge_cluster"], pa.Array)
