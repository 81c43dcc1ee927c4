from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.models.base import EMBED
from dataflywheel.ops.base import ModelRef, OpParams, Scorer


class Embed(Scorer):
    """Embed each row's instruction, response or whole conversation into ``embedding_<name>``.

    With a sentence-transformers model (default: the embedded all-MiniLM-L6-v2) the vectors are
    L2-normalised sentence embeddings; with an `hf` LLM they are its last hidden layer, mean-pooled or taken
    at the last token (the representation Cherry/IFD and DEITA use). Embeddings go through the call cache.
    """

    class Params(OpParams):
        model: str = ModelRef()
        field: Literal["instruction", "response", "conversation"] = Field(
            "instruction", description="which text to embed"
        )
        name: str = Field(
            "default", pattern=r"^[A-Za-z0-9_]+$", description="column suffix: embedding_<name>"
        )
        pooling: Literal["mean", "last"] = Field(
            "mean", description="hf models: mean of tokens or last token"
        )
        normalize: bool = Field(True, description="L2-normalise the vectors (cosine = dot product)")

    reads = (S.MESSAGES,)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (EMBED,)}
    batch_rows = 256

    def output_columns(self) -> list[str]:
        return [f"embedding_{self.params.name}"]

    def score(self, batch: pa.Table) -> dict:
        p = self.params
        texts = [S.text_of(c, p.field) for c in batch.column(S.MESSAGES).to_pylist()]
        model = self.ctx.model(p.model)
        kwargs = {"pooling": p.pooling} if model.spec.backend == "hf" else {}
        vecs = model.embed(texts, **kwargs)
        if p.normalize:
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        dim = vecs.shape[1]
        flat = pa.array(vecs.astype(np.float32).ravel(), pa.float32())
        return {f"embedding_{p.name}": pa.FixedSizeListArray.from_arrays(flat, dim)}
