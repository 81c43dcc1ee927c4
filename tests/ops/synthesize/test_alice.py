import numpy as np
import pytest
import torch

from dataflywheel.data import io
from dataflywheel.lib.guidance import ClassifierGuidance, label_probability, text_classifier
from dataflywheel.models.client import Model
from dataflywheel.ops.base import OpContext
from dataflywheel.ops.synthesize.alice import Alice
from dataflywheel.recipe.models import ModelSpec
from tests.conftest import ROOT


class CharTokenizer:
    """Token i is the letter chr(97 + i)."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(97 + i) for i in ids)


def test_guidance_adds_the_weighted_classifier_log_probability_to_the_top_tokens():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    prob = lambda texts: np.array([0.9 if t.endswith("c") else 0.1 for t in texts])  # noqa: E731
    guide = ClassifierGuidance(CharTokenizer(), prob, prompt_length=1, weight=2.0, top_k=3)
    out = guide(torch.tensor([[0, 1]]), logits)
    logp = logits.log_softmax(-1)
    want = logp[0, :3] + 2.0 * torch.log(torch.tensor([0.1, 0.1, 0.9]))
    assert torch.allclose(out[0, :3], want) and out[0, 3] == float("-inf")
    assert int(out.argmax()) == 2  # "c" wins with the classifier's help
    plain = ClassifierGuidance(CharTokenizer(), prob, 1, weight=0.0)(torch.tensor([[0]]), logits)
    assert torch.allclose(plain, logp)  # weight 0: the model's own distribution


def test_the_toy_classifier_and_its_target_label():
    clf = text_classifier(["good great fine", "bad awful poor"] * 3, ["pos", "neg"] * 3)
    assert list(clf.predict(["great", "awful"])) == ["pos", "neg"]
    assert label_probability(clf, "pos")(["good"])[0] > 0.5
    with pytest.raises(ValueError, match="no label 'neutral'"):
        label_probability(clf, "neutral")


@pytest.mark.slow
def test_alice_on_smollm2_pushes_text_towards_the_wrong_label(smollm2):
    prompts = ["Write a one-sentence complaint about a hotel.", "Write a short negative review of a phone."]
    seeds = io.rows_to_table(
        [{"id": f"s{i}", "messages": [{"role": "user", "content": p}]} for i, p in enumerate(prompts)]
    )
    model = Model("m", ModelSpec(backend="hf", model="x", cache="off"), backend=smollm2)
    ctx = OpContext(models={"m": model}, base_dir=str(ROOT))
    means = {}
    outputs = {}
    for weight in (0.0, 3.0):
        op = Alice(
            {"model": "m", "classifier_data": "examples/sentiment.jsonl", "target_label": "positive",
             "weight": weight, "max_tokens": 12},
            ctx=ctx,
        )  # fmt: skip
        op.setup()
        rows = list(op.generate(seeds))
        assert [r["parents"] for r in rows] == [["s0"], ["s1"]]
        means[weight] = np.mean([r["alice_target_prob"] for r in rows])
        outputs[weight] = [r["messages"][-1]["content"] for r in rows]
        # the recorded probability is the classifier's, recomputed
        assert [r["alice_target_prob"] for r in rows] == pytest.approx(list(op.probability(outputs[weight])))
    assert means[3.0] > means[0.0]
    # weight 0 is plain beam search: transformers' own, with no processor
    tok = smollm2.tokenizer
    for prompt, got in zip(prompts, outputs[0.0], strict=True):
        ids = torch.tensor([smollm2.encode(smollm2.render([{"role": "user", "content": prompt}]))])
        out = smollm2.model.generate(ids, attention_mask=torch.ones_like(ids), num_beams=4, do_sample=False,
                                     max_new_tokens=12, pad_token_id=tok.pad_token_id)  # fmt: skip
        assert got == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
