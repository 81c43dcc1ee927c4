"""Distillation across tokenizers: the losses against hand computations and their defining properties
(ULD ignores token identity, identical sides give zero, gradients reach only the student and the
projectors), the alignments by hand, on tiny random models with SmolLM2's and MiniLM's tokenizers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataflywheel.train import xtok as X

CONVS = [
    [
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "Seven is prime."},
    ],
    [
        {"role": "user", "content": "What colour is the sky?"},
        {"role": "assistant", "content": "The sky is blue."},
    ],
    [
        {"role": "user", "content": "Add two and three."},
        {"role": "assistant", "content": "Two and three make five."},
    ],
]


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    """A tiny random causal LM on MiniLM's WordPiece vocabulary, built as ``embedded:minilm-student`` is
    (its embeddings from MiniLM), with 1 layer."""
    from dataflywheel.models import embedded

    return str(
        X.build_wordpiece_student(str(embedded.resolve(embedded.MINILM)), tmp_path_factory.mktemp("s"), 1)
    )


def _load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(
        path
    )


def _labels(n, answer):
    """Labels of length n whose last ``answer`` positions are the answer (the rest -100)."""
    lab = torch.full((1, n), -100)
    lab[0, n - answer :] = torch.arange(answer)
    return lab


def test_uld_by_hand_and_invariant_to_permuting_a_vocabulary():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(1, 5, 7, generator=g)
    t = torch.randn(1, 6, 11, generator=g)
    s_lab, t_lab = _labels(5, 3), _labels(6, 2)  # 3 student and 2 teacher answer positions
    got = X.uld_loss(s, s_lab, t, t_lab)
    # independent: answer positions (those whose next label is set) aligned from the start, cut to the shorter
    sp = [i for i in range(4) if s_lab[0, i + 1] != -100]
    tp = [i for i in range(5) if t_lab[0, i + 1] != -100]
    n = min(len(sp), len(tp))
    total = 0.0
    for a, b in zip(sp[:n], tp[:n], strict=True):
        ps = np.sort(torch.softmax(s[0, a], -1).numpy())[::-1]
        pt = np.sort(torch.softmax(t[0, b], -1).numpy())[::-1]
        total += np.abs(np.pad(ps, (0, 4)) - pt).sum()
    assert n == 2 and got.item() == pytest.approx(total / n, rel=1e-5)
    perm = torch.randperm(11, generator=g)
    assert X.uld_loss(s, s_lab, t[..., perm], t_lab).item() == pytest.approx(got.item(), rel=1e-6)
    assert X.uld_loss(t, t_lab, t, t_lab).item() == pytest.approx(0.0, abs=1e-7)


def test_dtw_aligns_one_to_many_by_edit_distance():
    a = ["▁the", "▁cat", "s", "▁sat"]
    b = ["▁the", "▁cats", "▁sat"]
    # by hand: "s" costs 2 against "sat" and 3 against "cats", so it joins "sat": cumulative costs
    # the/the 0, cat/cats 1, s/sat 1 + 2, sat/sat 3 + 0 beat every path through s/cats
    assert X.dtw(a, b) == [[0], [1], [2, 3]]
    assert X.dtw(b, a) == [[0], [1], [2], [2]]


def test_canonical_tokens_and_vocab_map_agree_across_tokenizers(tiny_llama, tiny_student):
    from transformers import AutoTokenizer

    teacher, student = AutoTokenizer.from_pretrained(tiny_llama), AutoTokenizer.from_pretrained(tiny_student)
    t_ids = teacher.convert_tokens_to_ids(["ĠThe", "Ġsky", "ing"])
    s_ids = student.convert_tokens_to_ids(["the", "sky", "##ing"])
    norm = X._normalizer(student)
    assert X.canonical_tokens(teacher, t_ids, normalize=norm) == ["▁the", "▁sky", "ing"]
    assert X.canonical_tokens(student, s_ids) == ["▁the", "▁sky", "ing"]
    mapping = X.vocab_map(teacher, student)
    assert len(mapping) == len(teacher) and mapping[t_ids].tolist() == s_ids
    assert mapping[teacher.eos_token_id] == student.sep_token_id


def test_mined_teacher_logits_by_hand():
    tea2stu = torch.tensor([0, 0, 1, 2])  # teacher tokens 0 and 1 both map to student token 0
    t = torch.tensor([[1.0, 3.0, 2.0, -1.0], [0.5, 0.1, 0.2, 0.3]])
    out = X.mined_teacher_logits(t, torch.tensor([2, 1]), [1, -1], tea2stu, 3)
    # aligned to teacher position 1: the max over the teacher logits mapped to each student token
    assert out[0].tolist() == pytest.approx([0.5, 0.2, 0.3])
    assert out[1].tolist() == [-1e5, 100.0, -1e5]  # unaligned: the one-hot target
    # a student token no teacher token maps to stays at -1e5 where aligned
    out = X.mined_teacher_logits(t, torch.tensor([0]), [0], torch.tensor([0, 0, 0, 0]), 3)
    assert out[0].tolist() == [3.0, -1e5, -1e5]


def test_identical_sides_give_zero_uld_and_mined(tiny_llama):
    model, tok = _load(tiny_llama)
    rows, skipped, tea2stu = X.prepare(tok, tok, CONVS, 128, "mined")
    assert skipped == 0 and (tea2stu == np.arange(len(tok))).all()
    assert all(all(a >= 0 for a in r["alignment"]) for r in rows)  # every position aligned to itself
    pads = (tok.pad_token_id, tok.pad_token_id)
    for loss in ("uld", "mined"):
        with torch.no_grad():
            _, parts = X.kd_step(model, model, None, rows, loss, 0.5, 1.0, tea2stu, pads)
        assert parts["kd"] == pytest.approx(0.0, abs=1e-5), loss


@pytest.mark.parametrize("loss", ["uld", "mined", "dskd"])
def test_gradients_reach_only_the_student_and_the_projectors(loss, tiny_llama, tiny_student):
    student, s_tok = _load(tiny_student)
    teacher, t_tok = _load(tiny_llama)
    teacher.requires_grad_(False)
    rows, skipped, tea2stu = X.prepare(s_tok, t_tok, CONVS, 128, loss)
    assert skipped == 0
    proj = (
        X.build_projectors(student.config.hidden_size, teacher.config.hidden_size) if loss == "dskd" else None
    )
    pads = (s_tok.pad_token_id, t_tok.pad_token_id)
    total, parts = X.kd_step(student, teacher, proj, rows, loss, 0.5, 2.0, tea2stu, pads)
    assert torch.isfinite(total) and parts["kd"] > 0
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    if proj is not None:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in proj.parameters())
        assert set(parts) >= {"t2s_ce", "t2s_kd", "s2t_kd"}
    if loss == "mined":  # different tokenizers: some positions align, some fall back to the target
        flat = [a for r in rows for a in r["alignment"]]
        assert 0 < sum(a >= 0 for a in flat) < len(flat)


def test_student_features_end_each_answer_with_sep(tiny_student):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_student)
    f = X.row_features(tok, CONVS[1], 128)
    answer = [t for t in f["labels"] if t != -100]
    assert tok.decode(answer) == "the sky is blue. [SEP]"
    assert tok.decode(f["input_ids"]).startswith("[ user ] what colour is the sky? [SEP] [ assistant ]")
