"""The teacher's next-token distribution on every response token, computed once and stored beside the
data, so logit distillation (``distill``) never runs the teacher while training (GKD's supervised KD on
fixed data; MiniLLM and DistiLLM read the same quantity)."""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.errors import FlywheelError
from dataflywheel.models.base import LOGPROBS
from dataflywheel.ops.base import Mapper, ModelRef, OpParams
from dataflywheel.train.distill import token_digest
from dataflywheel.train.tokenize import pad_features, sft_features
from dataflywheel.train.trainers import labelled_logits

IDS, LOGPROBS_COL = "teacher_topk_ids", "teacher_topk_logprobs"
TOKENS, ERROR = "teacher_tokens", "error_teacher_topk"


class TeacherTopK(Mapper):
    """For each row, the teacher's top-k next-token log-probabilities at every response position, under
    the teacher's chat template exactly as ``sft`` and ``distill`` tokenize the row (assistant turns only,
    cut at ``max_length``; give the student's ``max_length``). Writes ``teacher_topk_ids`` and
    ``teacher_topk_logprobs`` (one list of k per response token, log-probabilities over the whole
    vocabulary) and ``teacher_tokens`` (a digest of the token ids, which ``distill`` checks). A row with no
    assistant turn gets no values and says so in ``error_teacher_topk``. The teacher must be an ``hf``
    model (its logits are read directly); the stats count the positions scored and the teacher's mean
    top-k mass (how much of its distribution the stored tokens hold)."""

    class Params(OpParams):
        model: str = ModelRef(description="the teacher: an hf model of the recipe")
        top_k: int = Field(20, ge=1, le=4096, description="tokens kept per position")
        max_length: int = Field(512, ge=16, description="tokens per row at most (the student's max_length)")
        batch_tokens: int = Field(4096, ge=64, description="padded tokens per teacher forward pass at most")

    reads = (S.MESSAGES,)
    writes = (IDS, LOGPROBS_COL, TOKENS, ERROR)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (LOGPROBS,)}
    batch_rows = 32

    def output_columns(self) -> list[str]:
        return list(self.writes)

    def map(self, batch: pa.Table) -> pa.Table:
        import torch

        backend = self.ctx.model(self.params.model).backend
        if not (hasattr(backend, "model") and hasattr(backend, "tokenizer")):
            raise FlywheelError(f"{self.name}: the teacher must be an hf model (its logits are read)")
        tok, model = backend.tokenizer, backend.model
        convs = batch.column(S.MESSAGES).to_pylist()
        feats = [sft_features(tok, c or [], self.params.max_length) for c in convs]
        ids: list = [None] * len(convs)
        lps: list = [None] * len(convs)
        digests: list = [None] * len(convs)
        errors: list = [None] * len(convs)
        todo = []
        for i, f in enumerate(feats):
            if f is None:
                errors[i] = "no assistant turn to score"
            else:
                todo.append(i)
        todo.sort(key=lambda i: -len(feats[i]["input_ids"]))
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        start = 0
        while start < len(todo):
            width = len(feats[todo[start]]["input_ids"])
            size = max(1, self.params.batch_tokens // width)
            group = todo[start : start + size]
            start += size
            input_ids, labels, mask = pad_features([feats[i] for i in group], pad)
            with torch.inference_mode():
                logits, _, positions = labelled_logits(
                    model, labels.to(backend.device), input_ids=input_ids.to(backend.device),
                    attention_mask=mask.to(backend.device),
                )  # fmt: skip
                top = torch.log_softmax(logits.float(), dim=-1).topk(self.params.top_k, dim=-1)
            per_row = positions.sum(dim=1).tolist()
            values, indices = top.values.cpu(), top.indices.cpu()
            self.stats["positions"] += int(values.shape[0])
            self.stats["topk_mass_sum"] += float(values.exp().sum())
            at = 0
            for i, n in zip(group, per_row, strict=True):
                ids[i] = indices[at : at + n].to(torch.int32).tolist()
                lps[i] = values[at : at + n].tolist()
                digests[i] = token_digest(feats[i]["input_ids"])
                at += n
        if self.stats["positions"]:
            self.stats["mean_topk_mass_x1000"] = round(
                1000 * self.stats["topk_mass_sum"] / self.stats["positions"]
            )
        for name, values_, typ in (
            (IDS, ids, pa.list_(pa.list_(pa.int32()))),
            (LOGPROBS_COL, lps, pa.list_(pa.list_(pa.float32()))),
            (TOKENS, digests, pa.string()),
            (ERROR, errors, pa.string()),
        ):
            batch = S.put_column(batch, name, pa.array(values_, typ))
        return batch
