"""ToxiCraft (Hui et al., Findings EMNLP 2024): labelled seed posts -> many new, varied posts for training a
harmful-content detector.

``toxicraft`` (a generator) works in the paper's four stages:

1. Attribute extraction: the model describes every seed (``attributes``: category, target, tone,
   explicitness, context by default) as one JSON object; a seed whose reply is not that object is
   counted and not used for attributes.
2. Recombination: each new post's attributes are drawn one by one from different seeds of the label
   it will carry, so combinations no seed has appear.
3. Seed-guided synthesis: the model writes a post with the label and the attributes, shown
   ``examples`` seeds of the label for reference (``temperature`` 1.0); the post is the reply's first
   line, and one cut off at ``max_tokens`` is dropped.
4. Validation: the model labels the new post and says whether it is realistic; a post whose label is
   not the one asked for, that is not called realistic, or that repeats a seed or an earlier post is
   dropped and counted by reason (``check: false`` skips it, for a comparison).

Labels come from ``column`` on the seeds; each label gets ``per_label`` new posts at most (spread over the
seed shards by the generation budget). New rows carry the label in ``column``, the attributes they were
written from in ``toxicraft_attributes`` (JSON), and as ``parents`` the seeds whose attributes or text
they were shown. Tests use placeholders, never abusive text.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.hashing import digest
from dataflywheel.models.base import CHAT, Sampling
from dataflywheel.models.constraint import Constraint
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Generator, GeneratorParams
from dataflywheel.ops.enhance.rebalance import parse_example
from dataflywheel.ops.llm import LLMParams, LLMTask
from dataflywheel.ops.parsing import json_object, json_shape

ATTRIBUTES = ("category", "target", "tone", "explicitness", "context")


def _prompt(name: str) -> str:
    return prompts.load(__file__, f"toxicraft_{name}.txt")


def attributes_prompt(text: str, keys: list[str]) -> str:
    skeleton = json.dumps({k: "..." for k in keys})
    return prompts.fill(_prompt("attributes"), keys=", ".join(keys), text=text, skeleton=skeleton)


def parse_attributes(text: str, keys: list[str]) -> dict | None:
    """The attribute object of a reply: every key present with a short non-empty string value."""
    got = json_object(text)
    if got is None:
        return None
    out = {}
    for k in keys:
        v = got.get(k)
        if isinstance(v, list):
            v = ", ".join(str(x) for x in v)
        if not isinstance(v, str | int | float) or isinstance(v, bool) or str(v).strip() in ("", "..."):
            return None
        out[k] = str(v).strip()[:200]
    return out


def attributes_shape(keys: list[str]) -> Constraint:
    """A JSON object of every attribute as a short string (about 15 tokens each, within the budget)."""
    return json_shape({k: {"type": "string", "minLength": 1, "maxLength": 60} for k in keys})


def check_shape(labels: list[str]) -> Constraint:
    """The check's JSON verdict: one of the labels, and whether the post reads as realistic."""
    return json_shape({"label": {"enum": list(labels)}, "realistic": {"enum": ["yes", "no"]}})


def parse_check(text: str, labels: list[str]) -> dict | None:
    got = json_object(text)
    if got is None or not isinstance(got.get("label"), str):
        return None
    by_lower = {lab.lower(): lab for lab in labels}
    label = by_lower.get(got["label"].strip().lower())
    realistic = str(got.get("realistic", "")).strip().lower()
    if label is None or realistic not in ("yes", "no", "true", "false"):
        return None
    return {"label": label, "realistic": realistic in ("yes", "true")}


class ToxiCraft(LLMTask, Generator):
    """ToxiCraft: attributes extracted from labelled seeds, recombined across seeds, new posts written
    from them and validated for label consistency and realism."""

    class Params(GeneratorParams, LLMParams):
        column: str = Field(description="the label column of the seeds (harmful / benign, a category)")
        per_label: int = Field(20, ge=1, description="new posts per label at most")
        attributes: list[str] = Field(list(ATTRIBUTES), min_length=1, description="attributes extracted")
        examples: int = Field(3, ge=0, description="seed posts of the label shown per request")
        check: bool = Field(True, description="drop posts the model labels otherwise or finds unrealistic")
        temperature: float = Field(1.0, ge=0, description="writing temperature")
        max_tokens: int = Field(128, ge=1, description="tokens per post at most")
        max_attempts: float = Field(3.0, ge=1, description="requests per wanted post at most")

    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}

    def input_columns(self) -> list[str]:
        return [S.MESSAGES, self.params.column]

    def output_columns(self) -> list[str]:
        return [S.MESSAGES, self.params.column, "toxicraft_attributes", "prompt_version"]

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        p = self.params
        if not seeds.num_rows:
            return
        rows = []
        for sid, conv, label in zip(
            *(seeds.column(c).to_pylist() for c in (S.ID, S.MESSAGES, p.column)), strict=True
        ):
            text = S.last_turn(conv or [], "user")
            if label is None or not (text and text.strip()):
                self.stats["unlabelled"] += 1
                continue
            rows.append((sid, text.strip(), label))
        if not rows:
            return
        values = {str(lab): lab for _, _, lab in rows}
        labels = sorted(values)
        version = digest(*(_prompt(f) for f in ("attributes", "write", "check")))[:12]
        rng = random.Random(digest("toxicraft", self.ctx.seed, [r[0] for r in rows]))
        # 1. attributes of every seed (greedy: a description, not a sample)
        keys = list(p.attributes)
        replies = self.ask_conversations(
            [_user(attributes_prompt(t, keys)) for _, t, _ in rows],
            lambda t: parse_attributes(t, keys),
            self.shaped(
                Sampling(temperature=0.0, max_tokens=max(64, 24 * len(keys))), attributes_shape(keys)
            ),
        )
        described = {}
        for (sid, _, _), reply in zip(rows, replies, strict=True):
            if reply.values:
                described[sid] = reply.values[0]
            else:
                self.stats["attributes_unparsed"] += 1
        seen = {S.norm_text(t).lower() for _, t, _ in rows}
        for label in labels:
            group = [r for r in rows if str(r[2]) == label]
            with_attrs = [r for r in group if r[0] in described]
            if not with_attrs:
                self.stats[f"no_attributes:{label}"] += 1
                continue
            made = attempts = tries = 0
            while made < p.per_label and attempts < p.max_attempts * p.per_label:
                batch = min(p.per_label - made, 16)
                attempts += batch
                sampling = self.retry_sampling(tries, stop=["\n"])
                tries += 1
                plans = [self._plan(rng, with_attrs, group, described, keys) for _ in range(batch)]
                convs = [
                    _user(
                        prompts.fill(
                            _prompt("write"),
                            label=label,
                            attributes="\n".join(f"- {k}: {v}" for k, v in attrs.items()),
                            examples="\n\n".join(f"Post: {t}" for _, t in shown) or "(none)",
                        )
                    )
                    for attrs, _, shown in plans
                ]
                # a post is one paragraph: its first line (an early stop, as Magpie's instructions)
                posts = self.sample_each(convs, parse_example, sampling)
                fresh = []
                for plan, reply in zip(plans, posts, strict=True):
                    if not reply.values:
                        continue  # failed or unparsed: counted by the base
                    if reply.finishes and reply.finishes[0] == "length":
                        self.stats["cut_off"] += 1
                        continue
                    text = reply.values[0]["text"]
                    key = S.norm_text(text).lower()
                    if key in seen:
                        self.stats["duplicate"] += 1
                        continue
                    seen.add(key)
                    fresh.append((plan, text))
                checks = self._check(fresh, labels, label)
                for (plan, text), ok in zip(fresh, checks, strict=True):
                    if not ok:
                        continue
                    attrs, parents, _ = plan
                    made += 1
                    self.stats[f"made:{label}"] += 1
                    yield {
                        S.MESSAGES: [{"role": "user", "content": text}],
                        p.column: values[label],
                        "toxicraft_attributes": json.dumps(attrs, ensure_ascii=False),
                        "prompt_version": version,
                        S.PARENTS: sorted(parents),
                    }
                    if made >= p.per_label:
                        break

    def _plan(self, rng: random.Random, with_attrs, group, described, keys):
        """One new post's attributes, each from a random seed of the label, and the seeds shown."""
        attrs, parents = {}, set()
        for k in keys:
            sid = rng.choice(with_attrs)[0]
            attrs[k] = described[sid][k]
            parents.add(sid)
        shown = rng.sample(group, min(self.params.examples, len(group)))
        parents |= {sid for sid, _, _ in shown}
        return attrs, parents, [(sid, t) for sid, t, _ in shown]

    def _check(self, fresh, labels: list[str], label: str) -> list[bool]:
        """Whether each new post keeps its label and reads as realistic (all True without the check)."""
        if not self.params.check:
            return [True] * len(fresh)
        convs = [
            _user(prompts.fill(_prompt("check"), labels=", ".join(labels), text=text)) for _, text in fresh
        ]
        verdict = self.shaped(Sampling(temperature=0.0, max_tokens=48), check_shape(labels))
        replies = self.ask_conversations(convs, lambda t: parse_check(t, labels), verdict)
        out = []
        for reply in replies:
            got = reply.values[0] if reply.values else None
            if got is None:
                self.stats["check_unparsed"] += 1
            elif got["label"] != label:
                self.stats["label_changed"] += 1
            elif not got["realistic"]:
                self.stats["unrealistic"] += 1
            out.append(got is not None and got["label"] == label and got["realistic"])
        return out


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]
