from __future__ import annotations

import json

import pytest

from dataflywheel.evaluate.stats import bootstrap_ci
from dataflywheel.evaluate.tasks import choice_letter, gsm8k_answer, gsm8k_correct


def test_gsm8k_extraction_reproduces_the_official_correctness_flags(shared_data):
    """Independent check: our answer matching agrees with the flags OpenAI published for 1,319 x 4
    model solutions."""
    rows = [
        json.loads(x)
        for x in (shared_data / "gsm8k" / "example_model_solutions.jsonl").read_text().splitlines()
    ]
    agree = total = 0
    for r in rows:
        for key in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            total += 1
            agree += gsm8k_correct(r[key]["solution"], r["ground_truth"]) == r[key]["is_correct"]
    assert total == 1319 * 4 and agree / total > 0.995, agree / total


def test_gsm8k_reference_answers_parse(shared_data):
    rows = [json.loads(x) for x in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()]
    assert all(gsm8k_answer(r["answer"]) is not None for r in rows)
    assert gsm8k_answer("so 1,234 apples.\n#### 1,234") == 1234.0
    assert gsm8k_answer("She makes 9 * 2 = $18.") == 18.0
    assert gsm8k_answer("no digits here") is None


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Answer: B", "B"),
        ("(C) because", "C"),
        ("D. Paris", "D"),
        ("The answer is A.", "A"),
        ("I think so", None),
        ("The correct option is C.", "C"),
        ("So the answer would be option D, since it is larger.", "D"),
        ("After thinking, my choice: (B)", "B"),
        ("A dog is a mammal, so it breathes air.", None),
        ("Note: A bird can fly.", None),
        ("the answer is a dog", None),
        ("   ", None),
    ],
)
def test_choice_letter(text, want):
    assert choice_letter(text) == want


def test_choice_letter_reads_the_text_of_one_option():
    options = ["Berlin", "Paris", "Rome", "Madrid"]
    assert choice_letter("It is Paris, the capital of France.", options=options) == "B"
    assert choice_letter("Paris or Rome, I am not sure.", options=options) is None


def test_bootstrap_ci_covers_the_mean():
    lo, hi = bootstrap_ci([1, 0, 1, 1, 0, 1, 1, 1, 0, 1] * 10)
    assert lo < 0.7 < hi and hi - lo < 0.3


# Real replies of the embedded SmolLM2-135M-Instruct (greedy, 32 tokens) to MMLU test questions put as
# "question / A. .. D. .. / Answer with the letter of the correct option." (high school geography,
# marketing, nutrition, sociology; the first four of each), with the letter each reply gives.
SMOLLM2_MMLU_REPLIES = [
    ("B. a well-connected transportation infrastructure.", "B"),
    ("B. rapid growth rate.", "B"),
    ("C. distance decay.", "C"),
    ("A. Third", "A"),  # option C's text after the letter A: the letter is the answer given
    ("A. AIDA.", "A"),  # likewise (AIDA is option B)
    ("C. Feedback", "C"),
    ("A. In the late 1800s.", "A"),
    ("B. Performance-value", "B"),
    ("A. Meat", "A"),
    ("A. If the incidence rate of the disease falls.", "A"),
    ("A. The flavonoid class comprises flavonoids and isoflavonoids.", "A"),
    (
        "A. Increased energy quantity/density and a more sedentary life-style\n\nThe correct answer is A.\n\n"
        "The obesity epidemic is primarily caused by a",
        "A",
    ),
    ("C. the media manipulate 'the masses' as vulnerable, passive consumers", "C"),
    ("B. the forms of wildlife and natural habitats that could be found on the edges of the city", "B"),
    ("B. not as enjoyable as other sociologists had suggested", "B"),
    (
        "A. an urban set, involved in civic bodies and voluntary associations\n\nThe correct answer is: "
        "A. an urban set, involved in civic bodies and voluntary",
        "A",
    ),
]


@pytest.mark.parametrize(("reply", "letter"), SMOLLM2_MMLU_REPLIES)
def test_choice_letter_on_real_small_model_replies(reply, letter):
    assert choice_letter(reply) == letter


def test_a_letter_the_reply_gives_beats_an_options_text_it_repeats():
    options = ["First", "Second", "Third", "Fourth"]
    assert choice_letter("A. Third", options=options) == "A"
    assert choice_letter("I would say Third.", options=options) == "C"
