"""Same-tokenizer logit distillation: the top-k divergences against TRL's GKD loss and hand computations,
the teacher's stored top-k against a direct forward pass, and training mechanics on a tiny random Llama
(identical teacher and student give a zero divergence; a row tokenized differently is refused)."""

from __future__ import annotations

import math

import pytest
import torch

from dataflywheel.data import io
from dataflywheel.data import schema as S
from dataflywheel.errors import FlywheelError
from dataflywheel.train.distill import topk_divergence, train_distill
from dataflywheel.train.tokenize import sft_features
from dataflywheel.train.trainers import TrainSettings


def full(student, teacher, loss, beta=0.5, temperature=1.0):
    """Our divergence with k = the whole vocabulary."""
    V = student.shape[-1]
    ids = torch.arange(V).expand(student.shape[0], V)
    return topk_divergence(student, ids, torch.log_softmax(teacher, -1), loss, beta, temperature)


@pytest.mark.parametrize(
    ("loss", "beta"), [("forward_kl", 0.0), ("reverse_kl", 1.0), ("jsd", 0.5), ("jsd", 0.1)]
)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_full_vocabulary_divergences_equal_trls_gkd_loss(loss, beta, temperature):
    from trl.experimental.gkd.gkd_trainer import GKDTrainer

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 11, generator=g) * 2, torch.randn(6, 11, generator=g) * 2
    ours = full(student, teacher, loss, beta, temperature).sum()
    trl = GKDTrainer.generalized_jsd_loss(
        student[None], teacher[None], beta=beta, temperature=temperature, reduction="sum"
    )
    assert ours.item() == pytest.approx(trl.item(), rel=1e-5, abs=1e-6)


def test_topk_renormalises_both_distributions_on_the_teachers_tokens():
    student = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    teacher_lp = torch.log_softmax(torch.tensor([[0.0, 3.0, 1.0, -2.0]]), -1)
    ids = torch.tensor([[1, 2]])  # the teacher's top 2
    got = topk_divergence(student, ids, teacher_lp.gather(-1, ids), "forward_kl").item()
    ps = torch.softmax(student, -1)[0, [1, 2]]
    pt = torch.softmax(teacher_lp, -1)[0, [1, 2]]
    ps, pt = ps / ps.sum(), pt / pt.sum()
    assert got == pytest.approx(float((pt * (pt / ps).log()).sum()), rel=1e-6)
    same = topk_divergence(teacher_lp, ids, teacher_lp.gather(-1, ids), "jsd").item()
    assert abs(same) < 1e-7  # a student with the teacher's distribution has nothing to learn


def rows_with_teacher(tiny_llama, texts, top_k=5, max_length=256):
    """Rows scored by the teacher_topk op with the tiny model as the teacher."""
    from dataflywheel.models.client import Model
    from dataflywheel.ops import registry
    from dataflywheel.ops.base import OpContext
    from dataflywheel.recipe.models import ModelSpec

    teacher = Model("teacher", ModelSpec(backend="hf", model=tiny_llama, device="cpu", cache="off"))
    rows = [
        {
            S.ID: f"r{i}",
            S.MESSAGES: [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": t}],
        }
        for i, t in enumerate(texts)
    ]
    rows.append({S.ID: "prompt-only", S.MESSAGES: [{"role": "user", "content": "Nothing to learn."}]})
    op = registry.get("teacher_topk")(
        {"model": "teacher", "top_k": top_k, "max_length": max_length, "batch_tokens": 64},
        OpContext(models={"teacher": teacher}),
    )
    return op, op.map(io.rows_to_table(rows)).to_pylist(), teacher


def test_teacher_topk_equals_a_direct_forward_pass(tiny_llama):
    op, rows, teacher = rows_with_teacher(tiny_llama, ["one two three", "a much longer answer " * 5, "x"])
    assert (
        rows[-1]["teacher_topk_ids"] is None
        and rows[-1]["error_teacher_topk"] == "no assistant turn to score"
    )
    backend = teacher.backend
    for row in rows[:-1]:
        f = sft_features(backend.tokenizer, row[S.MESSAGES], 256)
        with torch.no_grad():
            logits = backend.model(torch.tensor([f["input_ids"]])).logits[0, :-1]
        at = [t for t in range(len(f["labels"]) - 1) if f["labels"][t + 1] != -100]
        top = torch.log_softmax(logits[at].float(), -1).topk(5, -1)
        assert row["teacher_topk_ids"] == top.indices.tolist()
        assert torch.allclose(torch.tensor(row["teacher_topk_logprobs"]), top.values, atol=1e-4)
    assert op.stats["positions"] == sum(len(r["teacher_topk_ids"]) for r in rows[:-1])


def settings(**kw) -> TrainSettings:
    return TrainSettings(**{"lora_r": 4, "batch_size": 2, "max_length": 256, "precision": "float32", **kw})


@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl", "jsd"])
def test_a_student_that_is_the_teacher_starts_at_zero_divergence(tiny_llama, tmp_path, loss):
    """LoRA starts as the identity (B = 0): the student's distribution is the teacher's, so with the
    whole loss on the divergence the first step's loss is 0; with full vocabulary coverage (k = V) too."""
    _, rows, _ = rows_with_teacher(tiny_llama, ["one two three", "four five six seven", "eight"], top_k=50)
    stats = train_distill(
        tiny_llama, rows[:-1], tmp_path / "ckpt", settings(max_steps=2), loss=loss, kd_weight=1.0
    )
    assert stats["examples"] == 3 and stats["steps"] == 2
    assert abs(stats["losses"][0]) < 1e-5
    # with the cross-entropy in the mix the loss is the data's cross-entropy share, no longer 0
    mixed = train_distill(
        tiny_llama, rows[:-1], tmp_path / "ckpt2", settings(max_steps=1), loss=loss, kd_weight=0.5
    )
    assert mixed["losses"][0] > 1.0


def test_rows_the_student_tokenizes_differently_are_refused(tiny_llama, tmp_path):
    _, rows, _ = rows_with_teacher(tiny_llama, ["one two three " * 20, "four"], max_length=32)
    with pytest.raises(FlywheelError, match=r"row 0 \(r0\) tokenizes differently"):
        train_distill(
            tiny_llama, rows[:-1], tmp_path / "ckpt", settings(max_steps=1)
        )  # max_length 256, not 32
    bare = [{k: v for k, v in r.items() if not k.startswith("teacher_")} for r in rows[:-1]]
    with pytest.raises(FlywheelError, match="has no teacher log-probs"):
        train_distill(tiny_llama, bare, tmp_path / "ckpt", settings(max_steps=1, max_length=32))


def test_distillation_moves_the_student_toward_the_teacher(tiny_llama, tmp_path):
    """A student trained only on the divergence ends closer to the teacher than it started: a tiny random
    teacher (another seed) and the stored top-k of its distribution."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher_dir = tmp_path / "teacher"
    torch.manual_seed(1)
    other = AutoModelForCausalLM.from_config(AutoModelForCausalLM.from_pretrained(tiny_llama).config)
    other.save_pretrained(teacher_dir)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(teacher_dir)
    texts = ["one two three", "four five six seven", "eight nine", "ten eleven twelve"]
    _, rows, _ = rows_with_teacher(str(teacher_dir), texts, top_k=200)
    rows = rows[:-1]
    stats = train_distill(
        tiny_llama, rows, tmp_path / "ckpt", settings(epochs=30, lr=0.01, warmup_ratio=0.0, lora=False),
        loss="forward_kl", kd_weight=1.0,
    )  # fmt: skip
    losses = stats["losses"]
    assert losses[-1] < 0.5 * losses[0] and math.isfinite(losses[-1])
