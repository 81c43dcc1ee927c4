"""How far to trust a scorer: agreement of a score column with a label column (e.g. GPT-4 preferences)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataflywheel.errors import FlywheelError


@dataclass
class Calibration:
    n: int
    missing: int
    positives: int
    auc: float
    spearman: float
    threshold: float
    accuracy: float
    chosen: bool  # True: the threshold was given; False: the best one was searched


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative), ties counting half
    (the Mann-Whitney U statistic over average ranks)."""
    from scipy.stats import rankdata

    pos = labels.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binarize(labels: list, positive: str | None) -> np.ndarray:
    if positive is not None:
        return np.array([str(v) == positive for v in labels], dtype=float)
    values = set(labels)
    if values <= {0, 1}:  # also True/False and 0.0/1.0, which compare equal
        return np.array(labels, dtype=float)
    raise FlywheelError(
        f"labels take values {sorted(map(str, values))[:8]}: say which is positive with --positive"
    )


def calibrate(
    scores: list, labels: list, positive: str | None = None, threshold: float | None = None
) -> Calibration:
    from scipy.stats import spearmanr

    pairs = [
        (s, lab)
        for s, lab in zip(scores, labels, strict=True)
        if s is not None and lab is not None and not (isinstance(s, float) and np.isnan(s))
    ]
    if len(pairs) < 2:
        raise FlywheelError(f"only {len(pairs)} rows have both a score and a label")
    s = np.array([float(p[0]) for p in pairs])
    y = binarize([p[1] for p in pairs], positive)
    rho = float(spearmanr(s, y).statistic) if len(set(s)) > 1 and len(set(y)) > 1 else float("nan")
    chosen = threshold is not None
    if not chosen:
        candidates = np.unique(s)
        accs = [((s >= t) == y.astype(bool)).mean() for t in candidates]
        threshold = float(candidates[int(np.argmax(accs))])
    acc = float(((s >= threshold) == y.astype(bool)).mean())
    return Calibration(
        len(pairs), len(scores) - len(pairs), int(y.sum()), auc(s, y), rho, float(threshold), acc, chosen
    )
