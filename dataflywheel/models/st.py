"""The `sentence-transformers` backend: embeddings from any sentence-transformers model folder or name.

A local folder in the common layout (a transformer, mean or CLS pooling, optionally a normalize module:
all-MiniLM, e5, bge, gte, ...) is run with transformers directly, as sentence-transformers runs it: the
same texts, batches, truncation, pooling and normalisation give the same vectors (tests/models/test_st.py
holds them to 1e-6). Importing sentence-transformers alone takes 4-5 s on two cores, in every process that
embeds (bench/st_load.py); everything else goes through sentence-transformers itself.
"""

from __future__ import annotations

import json
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
        self.spec = model
        self.path = str(embedded.resolve(model) if model.startswith("embedded:") else model)
        self.device = pick_device(device)
        self.batch_size, self.normalize = batch_size, normalize
        self.plain = None if trust_remote_code else PlainEncoder.load(self.path, self.device)
        if self.plain is not None:
            self.dim = self.plain.dim
            return
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ModelError(
                "the sentence-transformers backend needs it: pip install 'dataflywheel[models]'"
            ) from None
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
        if self.plain is not None:
            return self.plain.encode(list(texts), self.batch_size, self.normalize)
        vecs = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)


class PlainEncoder:
    """A sentence-transformers folder of the common layout, run with transformers (see the module)."""

    def __init__(
        self, tokenizer, model, pooling: str, max_length: int, lower: bool, normalizes: bool, device
    ):
        self.tokenizer, self.model, self.pooling = tokenizer, model, pooling
        self.max_length, self.lower, self.device = max_length, lower, device
        self.normalizes = normalizes  # the folder's own Normalize module: vectors are unit length anyway
        self.dim = model.config.hidden_size

    @classmethod
    def load(cls, path: str, device: str) -> PlainEncoder | None:
        """The encoder, or None when the folder is anything but Transformer -> Pooling (mean or CLS)
        [-> Normalize] with weights on disk."""
        folder = Path(path)
        try:
            modules = json.loads((folder / "modules.json").read_text())
            kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
            if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
                return None
            if modules[0].get("path", "") != "":
                return None
            pool = json.loads((folder / modules[1]["path"] / "config.json").read_text())
            bert = json.loads((folder / "sentence_bert_config.json").read_text())
        except (OSError, ValueError, KeyError, IndexError):
            return None
        modes = [k for k, v in pool.items() if k.startswith("pooling_mode_") and v]
        if (
            modes not in (["pooling_mode_mean_tokens"], ["pooling_mode_cls_token"])
            or pool.get("include_prompt", True) is not True
        ):
            return None
        if set(bert) - {"max_seq_length", "do_lower_case"}:
            return None  # processor or model arguments this path does not apply
        from transformers import AutoModel, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path, dtype="float32").to(device).eval()
        except (OSError, ValueError):
            return None
        pooling = "mean" if modes == ["pooling_mode_mean_tokens"] else "cls"
        max_length = min(bert.get("max_seq_length") or 512, tokenizer.model_max_length)
        lower = bool(bert.get("do_lower_case"))
        return cls(tokenizer, model, pooling, max_length, lower, kinds[-1] == "Normalize", device)

    def encode(self, texts: list[str], batch_size: int, normalize: bool) -> np.ndarray:
        """Longest texts first in batches, as sentence-transformers orders them, back in input order."""
        import torch

        order = np.argsort([-len(t) for t in texts])
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = [texts[i].strip() for i in idx]
            if self.lower:
                batch = [t.lower() for t in batch]
            enc = self.tokenizer(
                batch,
                padding=True,
                truncation="longest_first",
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                tokens = self.model(**enc, return_dict=True).last_hidden_state
            if self.pooling == "cls":
                vecs = tokens[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(tokens.dtype)
                vecs = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if normalize or self.normalizes:
                vecs = torch.nn.functional.normalize(vecs, p=2, dim=1)
            out[idx] = vecs.float().cpu().numpy()
        return out
