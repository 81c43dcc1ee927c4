"""Label-noise experiments (RobustFT's protocol): a multiple-choice set, a known fraction of its labels
replaced by wrong ones, and how well a repair finds and fixes them."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataflywheel.data.formats import LETTERS
from dataflywheel.errors import DataError, Location


def read_mmlu(
    directory: str | Path, per_subject: int | None = None, subjects: int | None = None
) -> list[dict]:
    """MMLU's headerless subject CSVs (question, A, B, C, D, answer) as ``multiple_choice`` rows
    (question, choices, answer letter, subject), subjects in name order, the first ``per_subject`` rows
    of each of the first ``subjects``."""
    files = sorted(Path(directory).glob("*.csv"))[:subjects]
    if not files:
        raise DataError("no MMLU subject files", Location(str(directory)), "files named <subject>_test.csv")
    rows = []
    for path in files:
        subject = path.stem.removesuffix("_test")
        with open(path, newline="", encoding="utf-8") as f:
            for line, rec in enumerate(csv.reader(f), start=1):
                if per_subject is not None and line > per_subject:
                    break
                if len(rec) != 6 or rec[5].strip() not in "ABCD" or not rec[5].strip():
                    raise DataError(
                        "not an MMLU row", Location(str(path), line=line), "question,A,B,C,D,answer letter"
                    )
                rows.append(
                    {"question": rec[0], "choices": rec[1:5], "answer": rec[5].strip(), "subject": subject}
                )
    return rows


@dataclass
class Noisy:
    rows: list[dict]  # the rows with ``answer`` replaced where ``flipped``, the truth in ``true_answer``
    flipped: np.ndarray  # bool per row


def inject_label_noise(rows: list[dict], rate: float, seed: int = 0) -> Noisy:
    """Replace the ``answer`` of round(rate * n) rows, chosen at random, by another option's letter
    (uniformly among the wrong ones): every chosen label is wrong. ``true_answer`` keeps the truth."""
    rng = np.random.default_rng(seed)
    n = len(rows)
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, size=round(rate * n), replace=False)] = True
    out = []
    for row, flip in zip(rows, flipped, strict=True):
        letters = LETTERS[: len(row["choices"])]
        answer = row["answer"]
        if flip:
            answer = str(rng.choice([x for x in letters if x != row["answer"]]))
        out.append({**row, "answer": answer, "true_answer": row["answer"]})
    return Noisy(out, flipped)


@dataclass
class RepairScore:
    rows: int
    flagged: int  # rows detection called noisy
    precision: float  # of the flagged rows, how many had a wrong label
    recall: float  # of the wrong labels, how many were flagged
    kept: int  # rows in the repaired set
    accuracy_noisy: float  # labels right before the repair (all rows)
    accuracy_repaired: float  # labels right in the repaired set
    relabeled: int
    relabeled_right: int

    def as_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def score_repair(noisy: Noisy, tags: dict[str, str | None], repaired: dict[str, str]) -> RepairScore:
    """Detection precision and recall from ``tags`` (row id -> clean / noisy, ids are row positions as
    text), and label accuracy of ``repaired`` (row id -> the letter the repaired set gives it)."""
    wrong = {str(i) for i, f in enumerate(noisy.flipped) if f}
    flagged = {i for i, t in tags.items() if t == "noisy"}
    hit = len(flagged & wrong)
    truth = {str(i): r["true_answer"] for i, r in enumerate(noisy.rows)}
    given = {str(i): r["answer"] for i, r in enumerate(noisy.rows)}
    relabeled = [i for i in repaired if i in flagged]  # kept after detection called them noisy
    return RepairScore(
        rows=len(noisy.rows),
        flagged=len(flagged),
        precision=hit / len(flagged) if flagged else float("nan"),
        recall=hit / len(wrong) if wrong else float("nan"),
        kept=len(repaired),
        accuracy_noisy=float(np.mean([given[i] == truth[i] for i in truth])),
        accuracy_repaired=float(np.mean([repaired[i] == truth[i] for i in repaired]))
        if repaired
        else float("nan"),
        relabeled=len(relabeled),
        relabeled_right=sum(repaired[i] == truth[i] for i in relabeled),
    )
