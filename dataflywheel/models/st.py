"""The `sentence-transformers` backend: embeddings from any sentence-transformers model folder or name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataflywheel.hashing import digest
from dataflywheel.models import embedded
from dataflywheel.models.base import EMBED, Backend, ModelError
from dataflywheel.models.hf import pick_device


class SentenceTransformersBackend(Backend):
    capabilities = frozenset({EMBED})
    name = "sentence-transformers"

    def __init__(
        self,
        model: str,
        device: str = "auto",
        batch_size: int = 64,
        normalize: bool = True,
        trust_remote_code: bool = False,
    ):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ModelError(
                "the sentence-transformers backend needs it: pip install 'dataflywheel[models]'"
            ) from None
        self.spec = model
        self.path = str(embedded.resolve(model) if model.startswith("embedded:") else model)
        self.device = pick_device(device)
        self.batch_size, self.normalize = batch_size, normalize
        try:
            self.model = SentenceTransformer(
                self.path, device=self.device, trust_remote_code=trust_remote_code
            )
        except OSError as e:
            raise ModelError(f"cannot load '{model}' with sentence-transformers: {e}") from None
        dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = dim()

    @property
    def fingerprint(self) -> str:
        p = Path(self.path)
        files = (
            [(f.name, f.stat().st_size) for f in sorted(p.rglob("*")) if f.is_file()] if p.is_dir() else []
        )
        return digest("sentence-transformers", self.spec, files, self.normalize)

    def embed(self, texts: list[str]) -> np.ndarray:
        vecs = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)
