"""LLMaAA (Zhang et al., Findings EMNLP 2023): the LLM as the annotator inside an active-learning loop.

``llmaaa`` reads one dataset holding both sets: rows whose ``column`` is set are the gold
demonstrations, rows without it the unlabelled pool. The loop:

1. ``init`` pool rows drawn at random are annotated by the model: the task, the label set, the ``k``
   gold rows most similar to the row (cosine over the embedder's vectors; ``retrieval: random`` draws
   them instead) as "Input: / Output:" pairs, then the row. A reply that names no label (or more than
   one) is unparsed: counted, recorded in ``error_llmaaa``, never a label.
2. The task model (a softmax head over the same embeddings, ``lib.reweight.LinearHead``) is trained
   from scratch on the annotated rows. With ``reweight`` each batch is reweighted against the gold rows
   by learning to reweight (Ren et al. 2018, the paper's automatic reweighting): an annotation whose
   gradient works against the gold rows' gets weight 0.
3. ``per_round`` more rows are acquired by ``strategy`` (``entropy`` of the task model's prediction,
   ``least_confidence``, ``kmeans``: the row nearest each of ``per_round`` centroids of the rest of the
   pool, or ``random``), annotated, and the model retrained, ``rounds`` times.

Rows whose ``holdout`` column is true are never annotated: the student's predictions on them measure it.
Every row passes through. Annotated rows get the model's label in ``column``, the round they were
acquired in ``llmaaa_round`` and their weight in ``score_llmaaa_weight`` (the weight learning to
reweight gave them in the final model's last epoch, scaled by the batch size so that uniform is 1).
Every row gets the task model's prediction (``llmaaa_predicted``) and its probability
(``score_llmaaa_confidence``): the pool the loop never asked about is labelled by the student it trained.
"""

from __future__ import annotations

import random
import re
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.errors import FlywheelError
from dataflywheel.hashing import digest
from dataflywheel.lib.diversity import kmeans, nearest
from dataflywheel.models.base import CHAT, EMBED
from dataflywheel.models.constraint import Constraint
from dataflywheel.ops import prompts
from dataflywheel.ops.base import ModelRef, Selection, Selector
from dataflywheel.ops.llm import LLMParams, LLMTask


def parse_label(text: str, labels: list[str]) -> dict | None:
    """The label a reply names: the whole reply (case and end punctuation aside), else the one label that
    appears in it as a word; None when it names none or several."""
    low = {lab.lower(): lab for lab in labels}
    whole = text.strip().strip(".!\"'`*").strip().lower()
    if whole in low:
        return {"label": low[whole]}
    found = {lab for lab in labels if re.search(rf"(?<!\w){re.escape(lab)}(?!\w)", text, re.IGNORECASE)}
    return {"label": found.pop()} if len(found) == 1 else None


def annotation_prompt(task: str, labels: list[str], demos: list[tuple[str, str]], text: str) -> str:
    shown = "\n\n".join(f"Input: {t}\nOutput: {lab}" for t, lab in demos)
    return prompts.fill(
        prompts.load(__file__, "llmaaa_annotate.txt"),
        task=task.strip(),
        labels=", ".join(labels),
        demos=shown,
        text=text,
    )


def acquire(
    strategy: str, proba: np.ndarray | None, vecs: np.ndarray, n: int, rng: random.Random, seed: int
) -> list[int]:
    """Positions (into the candidates) of the n rows to annotate next."""
    n = min(n, len(vecs))
    if n <= 0:
        return []
    if strategy == "random" or proba is None:
        return rng.sample(range(len(vecs)), n)
    if strategy == "entropy":
        score = -(proba * np.log(np.clip(proba, 1e-12, None))).sum(1)
    elif strategy == "least_confidence":
        score = 1.0 - proba.max(1)
    else:  # kmeans: the row nearest each centroid
        labels, centroids = kmeans(vecs, n, seed=seed)
        picked = []
        for c in range(len(centroids)):
            members = np.flatnonzero(labels == c)
            if len(members):
                d = ((vecs[members] - centroids[c]) ** 2).sum(1)
                picked.append(int(members[np.argmin(d)]))
        return picked
    return [int(i) for i in np.argsort(-score, kind="stable")[:n]]


class LLMaAA(LLMTask, Selector):
    """LLMaAA: an active-learning loop whose annotator is the LLM, prompted with retrieved gold
    demonstrations, training a reweighted task model on its labels."""

    class Params(LLMParams):
        column: str = Field(description="the label column: set on the gold rows, written on annotated ones")
        embedder: str = ModelRef("embeds the rows for retrieval, acquisition and the task model")
        labels: list[str] | None = Field(None, description="the label set (default: the gold rows' labels)")
        task: str = Field("Classify the text.", description="what the annotator is asked to do")
        k: int = Field(5, ge=0, description="gold demonstrations shown per annotation")
        retrieval: Literal["knn", "random"] = Field("knn", description="how demonstrations are chosen")
        init: int = Field(50, ge=1, description="rows annotated first, drawn at random")
        per_round: int = Field(50, ge=1, description="rows acquired per round")
        rounds: int = Field(9, ge=0, description="acquisition rounds after the first annotation")
        strategy: Literal["entropy", "least_confidence", "kmeans", "random"] = Field(
            "entropy", description="how rows are acquired"
        )
        reweight: bool = Field(True, description="reweight annotations against the gold rows")
        epochs: int = Field(40, ge=1, description="task-model epochs per round")
        lr: float = Field(0.5, gt=0, description="task-model SGD learning rate (and the virtual step's)")
        batch_size: int = Field(16, ge=1, description="task-model batch size")
        max_tokens: int = Field(16, ge=1, description="tokens per annotation at most")
        holdout: str | None = Field(
            None, description="column marking rows never to annotate (a held-out set the student labels)"
        )

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,), "embedder": (EMBED,)}

    def input_columns(self) -> list[str]:
        return [S.MESSAGES, self.params.column] + ([self.params.holdout] if self.params.holdout else [])

    def output_columns(self) -> list[str]:
        return [
            self.params.column,
            "llmaaa_round",
            "score_llmaaa_weight",
            "llmaaa_predicted",
            "score_llmaaa_confidence",
            "error_llmaaa",
        ]

    def select(self, table: pa.Table) -> Selection:
        from dataflywheel.lib.reweight import LinearHead

        p = self.params
        rows = table.to_pylist()
        n = len(rows)
        texts = [(S.last_turn(r[S.MESSAGES] or [], "user") or "").strip() for r in rows]
        gold = [i for i, r in enumerate(rows) if r.get(p.column) is not None and texts[i]]
        held = {i for i, r in enumerate(rows) if p.holdout and r.get(p.holdout)}
        pool = [i for i, r in enumerate(rows) if r.get(p.column) is None and texts[i] and i not in held]
        labels = list(p.labels) if p.labels else sorted({str(rows[i][p.column]) for i in gold})
        if not gold or len(labels) < 2:
            raise FlywheelError(
                f"step {self.ctx.step} ({self.name}): LLMaAA needs gold rows (rows whose '{p.column}' is "
                f"set) of at least two labels; found {len(gold)} gold rows, labels {labels}"
            )
        bad = sorted({str(rows[i][p.column]) for i in gold} - set(labels))
        if bad:
            raise FlywheelError(f"step {self.ctx.step} ({self.name}): gold labels {bad} are not in `labels`")
        index = {lab: j for j, lab in enumerate(labels)}
        vecs = np.asarray(self.ctx.model(p.embedder).embed(texts), dtype=np.float32)
        gold_x, gold_y = vecs[gold], np.array([index[str(rows[i][p.column])] for i in gold])
        rng = random.Random(digest("llmaaa", self.ctx.seed, [r[S.ID] for r in rows]))
        label: dict[int, str] = {}
        round_of: dict[int, int] = {}
        errors: dict[int, str] = {}
        remaining = list(pool)
        head, proba = None, None
        curve = []
        for r in range(p.rounds + 1):
            size = p.init if r == 0 else p.per_round
            cand = np.asarray(remaining, dtype=np.int64)
            cand_proba = None if proba is None else proba[cand]
            picked = [
                remaining[j]
                for j in acquire(
                    p.strategy if r else "random", cand_proba, vecs[cand], size, rng, self.ctx.seed
                )
            ]
            if not picked:
                break
            taken = set(picked)
            remaining = [i for i in remaining if i not in taken]
            self._annotate(picked, texts, vecs, gold, gold_y, labels, rng, label, errors)
            for i in picked:
                round_of[i] = r
            done = sorted(label)
            if done:
                head = LinearHead(vecs.shape[1], len(labels), seed=self.ctx.seed)
                stats = head.fit(
                    vecs[done],
                    np.array([index[label[i]] for i in done]),
                    gold_x if p.reweight else None,
                    gold_y if p.reweight else None,
                    epochs=p.epochs,
                    batch_size=p.batch_size,
                    lr=p.lr,
                )
                proba = head.proba(vecs)
                curve.append(
                    {"round": r, "annotated": len(done), "skipped_batches": stats.zero_weight_batches}
                )
        done = sorted(label)
        weight: dict[int, float] = {}
        if head is not None and p.reweight and done:
            # the weight each annotation had in the final model's last epoch (uniform = 1)
            weight = dict(zip(done, head.last_weights.tolist(), strict=True))
            self.stats["zero_weight"] = sum(v == 0 for v in weight.values())
        self.stats.update(gold=len(gold), pool=len(pool), held_out=len(held), annotated=len(done))
        predicted = [labels[j] for j in proba.argmax(1)] if proba is not None else [None] * n
        confidence = proba.max(1).tolist() if proba is not None else [None] * n
        column = [rows[i].get(p.column) for i in range(n)]
        for i, lab in label.items():
            column[i] = lab
        columns = {
            p.column: pa.array([None if v is None else str(v) for v in column], pa.string()),
            "llmaaa_round": pa.array([round_of.get(i) for i in range(n)], pa.int32()),
            "score_llmaaa_weight": pa.array([weight.get(i) for i in range(n)], pa.float64()),
            "llmaaa_predicted": pa.array(predicted, pa.string()),
            "score_llmaaa_confidence": pa.array(confidence, pa.float64()),
            "error_llmaaa": pa.array([errors.get(i) for i in range(n)], pa.string()),
        }
        return Selection(
            np.arange(n, dtype=np.int64), columns=columns, stats={"counts": dict(self.stats), "curve": curve}
        )

    def _annotate(self, picked, texts, vecs, gold, gold_y, labels, rng, label, errors) -> None:
        p = self.params
        gold_label = {j: labels[y] for j, y in zip(gold, gold_y, strict=True)}
        if p.retrieval == "knn" and p.k:
            near = nearest(vecs[gold], vecs[picked], p.k)
            demos = [[gold[j] for j in hits] for hits in near]
        else:
            demos = [rng.sample(gold, min(p.k, len(gold))) for _ in picked]
        convs = [
            [
                {
                    "role": "user",
                    "content": annotation_prompt(
                        p.task, labels, [(texts[j], gold_label[j]) for j in shown], texts[i]
                    ),
                }
            ]
            for i, shown in zip(picked, demos, strict=True)
        ]
        one_label = self.shaped(self.sampling(), Constraint(choice=[str(lab) for lab in labels]))
        replies = self.ask_conversations(convs, lambda t: parse_label(t, labels), one_label)
        for i, reply in zip(picked, replies, strict=True):
            if reply.error is not None:
                errors[i] = f"request failed: {reply.error}"
            elif not reply.values:
                errors[i] = f"unparsed reply: {(reply.texts or [''])[0][:200]!r}"
            else:
                label[i] = reply.values[0]["label"]
