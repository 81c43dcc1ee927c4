from __future__ import annotations

from typing import ClassVar

import pyarrow as pa

from dataflywheel.data import schema as S
from dataflywheel.lib.text import turns
from dataflywheel.ops.select.signals import SignalParams, SignalScorer


class LanguageId(SignalScorer):
    """Language of the text: ``tag_<field>_lang`` (ISO 639-1) and ``score_<field>_lang_conf`` (0-1).

    Uses py3langid (langid.py's naive Bayes over byte n-grams, 97 languages), whose model ships inside
    its PyPI package as a NumPy archive: offline, deterministic, no pickle, and fast on short texts,
    which is why it was chosen over fastText's lid.176 (a separate download) and langdetect (random
    unless seeded). All turns of the field are identified together.
    """

    Params: ClassVar = SignalParams
    signals: ClassVar[tuple[str, ...]] = ("lang", "lang_conf")

    def setup(self) -> None:
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier
        except ImportError:
            raise ImportError("language_id needs py3langid: pip install py3langid") from None
        self._ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    def output_columns(self) -> list[str]:
        return [c for f in self.params.fields for c in (f"tag_{f}_lang", f"score_{f}_lang_conf")]

    def score(self, batch: pa.Table) -> dict:
        out: dict[str, list] = {c: [] for c in self.output_columns()}
        for conv in batch.column(S.MESSAGES).to_pylist():
            for field in self.params.fields:
                text = "\n".join(turns(conv, field)).strip()
                lang, conf = self._ident.classify(text) if text else (None, None)
                out[f"tag_{field}_lang"].append(lang)
                out[f"score_{field}_lang_conf"].append(None if conf is None else float(conf))
        return out
