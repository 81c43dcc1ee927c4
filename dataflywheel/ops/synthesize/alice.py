"""Adversarial generation with a classifier in the decoding loop (ALICE, from ToxiGen: Hartvigsen et al.,
ACL 2022; survey 3.4).

Each seed's prompt (its conversation without a final answer) is answered by beam search in which every
candidate next token is scored by the model's log-probability plus ``weight`` x the log-probability the
target classifier gives ``target_label`` to the text so far (``lib.guidance``). With a target the text
should not have (``positive`` while the prompt asks for a complaint), the result is text the classifier
gets wrong: hard examples to train it on. ``weight: 0`` is plain beam search.

The target classifier is TF-IDF + logistic regression fitted on a labelled file (``classifier_data``:
JSON lines with ``text_field`` and ``label_field``), the toy target METHODS.md 3.4 names; each row records
the classifier's probability of the target label for the final text (``alice_target_prob``) and its
predicted label (``alice_label``), so a filter can keep the rows it gets wrong. The model must be a local
``hf`` model (the decoding loop runs inside transformers).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import orjson
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.errors import FlywheelError
from dataflywheel.lib.guidance import ClassifierGuidance, label_probability, text_classifier
from dataflywheel.models.base import CHAT
from dataflywheel.ops.base import Generator, GeneratorParams, ModelRef


class Alice(Generator):
    """ALICE: beam search re-scored by a target classifier's probability of a chosen (wrong) label."""

    class Params(GeneratorParams):
        model: str = ModelRef("a local hf model to decode with")
        classifier_data: str = Field(
            description="JSON lines of labelled texts the target classifier is fitted on"
        )
        text_field: str = Field("text", description="the text field of classifier_data")
        label_field: str = Field("label", description="the label field of classifier_data")
        target_label: str = Field(description="the label to push the classifier towards (the wrong one)")
        weight: float = Field(1.0, ge=0, description="lambda: weight of the classifier's log-probability")
        num_beams: int = Field(4, ge=1, description="beams")
        top_k: int = Field(10, ge=1, description="candidate tokens re-scored per beam and step")
        max_tokens: int = Field(20, ge=1, description="new tokens at most")
        keep_seeds: bool = Field(False, description="the seed rows pass through too")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}
    reads = (S.MESSAGES,)
    writes = (S.MESSAGES, "alice_target", "alice_target_prob", "alice_label")

    def setup(self) -> None:
        p = self.params
        texts, labels = [], []
        path = self.ctx.path(p.classifier_data)
        for n, line in enumerate(open(path, "rb"), 1):
            if not line.strip():
                continue
            row = orjson.loads(line)
            if not isinstance(row.get(p.text_field), str) or row.get(p.label_field) is None:
                raise FlywheelError(f"{path}:{n}: expected a string '{p.text_field}' and a '{p.label_field}'")
            texts.append(row[p.text_field])
            labels.append(str(row[p.label_field]))
        self.classifier = text_classifier(texts, labels)
        self.probability = label_probability(self.classifier, p.target_label)

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        import torch
        from transformers import LogitsProcessorList

        p = self.params
        model = self.ctx.model(p.model)
        backend = model.backend
        if not hasattr(backend, "model") or not hasattr(backend, "tokenizer") or backend.name != "hf":
            raise FlywheelError(f"alice decodes inside transformers: model '{p.model}' must use backend: hf")
        tok = backend.tokenizer
        for sid, conv in zip(
            seeds.column(S.ID).to_pylist(), seeds.column(S.MESSAGES).to_pylist(), strict=True
        ):
            prompt = S.prompt_of(conv or [])
            if not prompt:
                continue
            ids = torch.tensor([backend.encode(backend.render(prompt))], device=backend.device)
            guide = ClassifierGuidance(tok, self.probability, ids.shape[1], p.weight, p.top_k)
            with torch.inference_mode():
                out = backend.generator.generate(
                    ids, attention_mask=torch.ones_like(ids), num_beams=p.num_beams, do_sample=False,
                    max_new_tokens=p.max_tokens, logits_processor=LogitsProcessorList([guide]),
                    pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None,
                )  # fmt: skip
            text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
            model.usage.requests += 1
            model.usage.prompt_tokens += ids.shape[1]
            model.usage.completion_tokens += int(out.shape[1] - ids.shape[1])
            if not text:
                self.stats["empty"] += 1
                continue
            prob = float(self.probability([text])[0])
            label = str(self.classifier.predict([text])[0])
            self.stats["fooled" if label == p.target_label else "not_fooled"] += 1
            yield {
                S.MESSAGES: [*prompt, {"role": "assistant", "content": text}],
                "alice_target": p.target_label,
                "alice_target_prob": prob,
                "alice_label": label,
                S.PARENTS: [sid],
            }
