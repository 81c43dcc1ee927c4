"""Impossible Distillation: every filter alone against hand-made cases, the stage-0 and refine
pipelines with a scripted critic, and both generators on a scripted model."""

from __future__ import annotations

import pytest

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.lib.rouge import rouge_l
from dataflywheel.ops.distill import impossible as I
from tests.fakes import ScriptedBackend, context


def test_first_sentence():
    assert I.first_sentence(" The mayor resigned on Monday. She cited health reasons.") == (
        "The mayor resigned on Monday."
    )
    assert I.first_sentence('He said "no." Then left.') == 'He said "no."'
    assert I.first_sentence("no terminal punctuation here") is None
    assert I.first_sentence("A.") is None  # fewer than 3 characters
    assert I.first_sentence("\n\nThe vote passed 7 to 2. Then\nmore.") == "The vote passed 7 to 2."
    assert I.first_sentence("The headline without a stop\nThe body starts here.") is None
    assert I.first_sentence("It cost $3.50 in total! Wow.") == "It cost $3.50 in total!"


def test_length_ratio_in_characters():
    a = "x" * 100
    assert I.length_ok(a, "y" * 80) and I.length_ok(a, "y" * 150)
    assert not I.length_ok(a, "y" * 79) and not I.length_ok(a, "y" * 151)


def test_numbers_are_numerised_and_compared_both_ways():
    assert I.numbers("Twenty-five people and 3 dogs") == {"25", "3"}
    assert I.numbers("one thousand two hundred") == {"1200"}
    assert I.numbers("It cost 1,000 dollars, or 3.50 each.") == {"1000", "3.5"}
    assert I.numbers_match("Five men came.", "5 men arrived.")
    assert not I.numbers_match("Five men came.", "Six men came.")
    assert not I.numbers_match("The team won.", "The team won 3 games.")  # a number only on one side
    assert I.numbers_match("The team won.", "The side won.")


def test_components():
    assert I.components(5, [(0, 1), (1, 2), (3, 4)]) == [[0, 1, 2], [3, 4]]
    assert I.components(3, []) == [[0], [1], [2]]


def word_entail(premises, hypotheses):
    """A scripted critic: the share of the hypothesis's content words that the premise has (None for a
    hypothesis containing 'unscorable')."""
    out = []
    for p, h in zip(premises, hypotheses, strict=True):
        if "unscorable" in h:
            out.append(None)
            continue
        pw = {w.strip(".,").lower() for w in p.split() if len(w) > 3}
        hw = [w.strip(".,").lower() for w in h.split() if len(w) > 3]
        out.append(sum(w in pw for w in hw) / max(1, len(hw)))
    return out


def test_bootstrap_applies_the_filters_in_order():
    a = "The city council approved the new budget on Tuesday evening."
    b = "On Tuesday evening, the city council approved the new budget."  # paraphrase, reordered
    c = "The council rejected the stadium plan after a long debate."  # different content
    d = "The city council approved the new budget on Tuesday evening"  # near copy of a
    f = I.Filters(word_entail)
    pairs = f.bootstrap([a, b, c, d, a])
    got = {(p.source, p.target) for p in pairs}
    # c entails nothing; a/d are copies (ROUGE-L 1); a, b and d entail each other: one group, one pair,
    # the first of the equally strong a-b, b-a, b-d, d-b (ROUGE-L 0.7 each)
    assert got == {(a, b)}
    assert f.counts["identical candidates"] == 1
    assert f.counts["entailment"] > 0  # c does not entail the others
    assert f.counts["rouge-l"] == 2 and f.counts["duplicate source"] == 3
    for p in pairs:
        assert (
            p.nli >= 0.75 and p.reverse_nli >= 0.75 and p.rouge == pytest.approx(rouge_l(p.source, p.target))
        )


def test_dedup_keeps_the_strongest_pair_of_each_group():
    f = I.Filters(lambda ps, hs: [1.0 if p[0] == h[0] else 0.0 for p, h in zip(ps, hs, strict=True)])
    pairs = [
        I.Pair("alpha one.", "x", 0.9, 0.8),
        I.Pair("alpha two.", "y", 0.95, 0.9),
        I.Pair("beta.", "z", 1, 1),
    ]
    kept = f.dedup(pairs, "source")
    assert [(p.source, p.target) for p in kept] == [("alpha two.", "y"), ("beta.", "z")]
    assert f.counts["duplicate source"] == 1


def test_refine_keeps_the_most_diverse_survivor_and_counts_the_rest():
    source = "The museum will reopen next spring after repairs to the roof."
    close = "The museum will reopen next spring after the roof is repaired."
    far = "After roof repairs, the museum will reopen next spring."
    numbers = "The museum will reopen in 2 years after repairs to the roof."
    f = I.Filters(word_entail, threshold=0.6)
    pair = f.refine(source, [close, far, numbers, "unscorable museum reopening sentence, about the roof."])
    assert pair.target == far and pair.rouge == pytest.approx(rouge_l(source, far))
    assert rouge_l(source, far) < rouge_l(source, close)
    assert f.counts["numbers"] == 1 and f.counts["entailment unscored"] == 1
    assert I.Filters(word_entail).refine(source, [source]) is None


def _yes_if_overlap(conv, options):
    text = conv[-1]["content"]
    first = text.split("First sentence: ", 1)[1].split("\n", 1)[0]
    second = text.split("Second sentence: ", 1)[1].split("\n", 1)[0]
    (p,) = word_entail([first], [second])
    return [0.0, -50.0] if p is not None and p >= 0.75 else [-50.0, 0.0]


def test_impossible_pairs_generator_on_a_scripted_teacher():
    conts = iter(
        [
            " Officials said the bridge will close for repairs next week. More later.",
            " The bridge will close next week for repairs, officials said.",
            " Fans cheered as the home team scored twice.",
            "no sentence here",
        ]
        * 4
    )
    lm = ScriptedBackend(default=lambda conv: next(conts), option_logprobs=_yes_if_overlap)
    seeds = io.rows_to_table([{S.ID: "ctx1", S.MESSAGES: [{"role": "user", "content": "CITY (AP) --"}]}])
    op = I.ImpossiblePairs({"model": "m", "samples": 4}, ctx=context(m=lm))
    rows = list(op.generate(seeds))
    assert rows and all(r[S.PARENTS] == ["ctx1"] for r in rows)
    sources = {r[I.SOURCE] for r in rows}
    assert sources <= {
        "Officials said the bridge will close for repairs next week.",
        "The bridge will close next week for repairs, officials said.",
    }
    for r in rows:
        assert r[S.MESSAGES][0]["content"] == f"Paraphrase this sentence: {r[I.SOURCE]}"
        assert r[S.MESSAGES][1]["content"] != r[I.SOURCE] and r["impossible_nli"] == 1.0
    assert op.stats["no_sentence"] == 1 and op.stats["candidates"] == 3
    assert lm.samplings == [] and op.stats["entailment_requests"] > 0  # completions, not chat


def test_nli_model_critic_reads_the_entailment_label(tmp_path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from dataflywheel.models import embedded

    tok = AutoTokenizer.from_pretrained(embedded.resolve(embedded.MINILM))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        num_labels=3, id2label={0: "CONTRADICTION", 1: "ENTAILMENT", 2: "NEUTRAL"},
        label2id={"CONTRADICTION": 0, "ENTAILMENT": 1, "NEUTRAL": 2},
    )  # fmt: skip
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    critic = I.NLIModel(str(tmp_path), batch_size=2)
    assert critic.index == 1
    premises, hypotheses = (
        ["A man eats.", "It rains.", "Cats sleep a lot."],
        ["Someone eats.", "It is dry.", "Cats nap."],
    )
    got = critic(premises, hypotheses)
    with torch.no_grad():
        want = [
            torch.softmax(model(**tok(p, h, return_tensors="pt")).logits, -1)[0, 1].item()
            for p, h in zip(premises, hypotheses, strict=True)
        ]
    assert got == pytest.approx(want, abs=1e-5)
    config.id2label = {0: "yes", 1: "no"}
    config.num_labels = 2
    BertForSequenceClassification(config).save_pretrained(tmp_path / "bad")
    tok.save_pretrained(tmp_path / "bad")
    with pytest.raises(ValueError, match="no entailment label"):
        I.NLIModel(str(tmp_path / "bad"))
