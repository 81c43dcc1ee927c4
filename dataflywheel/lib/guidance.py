"""Classifier-in-the-loop decoding (ALICE, from ToxiGen: Hartvigsen et al., ACL 2022).

During beam search each beam's next-token candidates are re-scored by the language model's log-probability
plus ``weight`` x the log-probability that a target classifier gives a chosen label to the text so far with
that token appended. Aiming at the label the classifier should *not* give (benign for toxic text, positive
for a negative review) yields text the classifier gets wrong: hard examples for it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def text_classifier(texts: list[str], labels: list[str]):
    """A TF-IDF + logistic-regression classifier (the toy target of METHODS.md 3.4) fitted on labelled
    texts; ``classes_`` are its labels."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    clf = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=10.0, max_iter=1000)
    )
    clf.fit(texts, labels)
    return clf


def label_probability(clf, label: str) -> Callable[[list[str]], np.ndarray]:
    """texts -> the classifier's probability of ``label`` for each."""
    classes = list(clf.classes_)
    if label not in classes:
        raise ValueError(f"the classifier has no label {label!r}; its labels: {classes}")
    column = classes.index(label)
    return lambda texts: clf.predict_proba(texts)[:, column]


class ClassifierGuidance:
    """A transformers logits processor: keeps each row's ``top_k`` next tokens, scored
    log p_LM(token) + weight x log p_clf(label | generated text + token); every other token is ruled out.
    ``prompt_length`` is where generation starts in ``input_ids`` (left-padded prompts end there)."""

    def __init__(self, tokenizer, probability: Callable[[list[str]], np.ndarray], prompt_length: int,
                 weight: float, top_k: int = 10):  # fmt: skip
        self.tokenizer, self.probability = tokenizer, probability
        self.prompt_length, self.weight, self.top_k = prompt_length, weight, top_k

    def __call__(self, input_ids, scores):
        import torch

        logp = scores.float().log_softmax(-1)
        if self.weight == 0:
            return logp
        top = logp.topk(self.top_k, dim=-1)
        rows = input_ids[:, self.prompt_length :].tolist()
        texts = [
            self.tokenizer.decode(row + [int(t)], skip_special_tokens=True)
            for row, cands in zip(rows, top.indices.tolist(), strict=True)
            for t in cands
        ]
        p = np.clip(self.probability(texts), 1e-9, 1.0).reshape(len(rows), self.top_k)
        bonus = torch.from_numpy(np.log(p)).to(logp.dtype).to(logp.device) * self.weight
        out = torch.full_like(logp, float("-inf"))
        out.scatter_(1, top.indices, top.values + bonus)
        return out
