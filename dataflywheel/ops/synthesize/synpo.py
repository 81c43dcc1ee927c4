"""SynPO (Dong et al., ICLR 2025): self-boosting with synthetic preference data, from a small seed set of
prompts with gold responses and no human preference labels. Three steps:

    - synpo_prompter: {model: base, output_model: prompter}          # keywords -> prompt, trained once
    - loop:
        iterations: 2
        data: initial
        steps:
          - synpo_improver: {model: base, policy: policy, output_model: improver}
          - synpo_pairs: {model: policy, prompter: prompter, improver: improver, prompts: 32}
          - dpo: {model: policy, output_model: policy, beta: 0.1}

``synpo_prompter`` tunes the self-prompt generator: each seed prompt's keywords (content words, up to
``keywords``) plus one noise keyword taken from another seed, shuffled, are the input, the seed prompt the
target, so the generator learns to write a request around keywords and to leave out one that does not fit.
``synpo_improver`` tunes the response improver of iteration t from the same base: the policy M_{t-1}
answers each seed prompt, and the improver learns to rewrite (prompt, M_{t-1}'s response) into the gold
response. ``synpo_pairs`` makes the iteration's data: keywords sampled from a keyword list (``keywords``
file, one per line; default: the seeds' keywords) -> the prompter writes a prompt -> the judge checks it is
a request it can answer (its next-token Yes against No) -> the policy answers (y) -> the improver rewrites
(y^w) -> the judge scores both (Self-Rewarding's additive 5-point prompt) and a pair (chosen y^w, rejected
y) is kept when y^w scores at least ``gap`` higher (the paper's gap filter). DPO from M_{t-1} on the
pairs gives M_t. Every prompt, answer and judgement that fails or cannot be read is dropped and counted.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from dataflywheel.data import schema as S
from dataflywheel.errors import FlywheelError
from dataflywheel.hashing import digest
from dataflywheel.models.base import CHAT, LOGPROBS, Sampling
from dataflywheel.ops import prompts
from dataflywheel.ops.base import Generator, GeneratorParams, ModelRef, Trainer
from dataflywheel.ops.evolve.self_reward import judge_responses
from dataflywheel.ops.llm import LLMParams, LLMTask, text_reply
from dataflywheel.ops.train.sft import TrainParams, base_path
from dataflywheel.train.trainers import train_sft

# Function words and request verbs that carry no topic: never keywords.
STOPWORDS = frozenset(
    """about above after again against also among another answer any are because been before being below
    between both but can could does doing down during each either else every explain following from further
    give given have having here how into its itself just less like list make many more most much must need
    only other others ought over please provide same say should show some such tell than that their them
    then there these they this those through under until upon using very want were what when where which
    while who whom whose why will with within without would write your yours""".split()
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")


def keywords_of(text: str) -> list[str]:
    """A prompt's content words: words of four letters or more, lowercased, without function words, each
    once, in order."""
    out: list[str] = []
    for w in _WORD.findall(text or ""):
        w = w.lower().strip("'-")
        if len(w) >= 4 and w not in STOPWORDS and w not in out:
            out.append(w)
    return out


def prompter_request(keywords: list[str]) -> list[dict]:
    text = prompts.fill(prompts.load(__file__, "synpo_prompter.txt"), keywords=", ".join(keywords))
    return [{"role": "user", "content": text}]


def improver_request(prompt: str, response: str) -> list[dict]:
    text = prompts.fill(prompts.load(__file__, "synpo_improver.txt"), prompt=prompt, response=response)
    return [{"role": "user", "content": text}]


def keyword_conversations(
    seeds: list[tuple[str, str]], per_prompt: int, seed: int
) -> tuple[list[list[dict]], dict[str, int]]:
    """The prompter's training conversations: up to ``per_prompt`` keywords of each seed prompt plus one
    noise keyword from another seed, shuffled -> the seed prompt. Seeds with fewer than two keywords are
    left out (counted)."""
    rng = random.Random(seed)
    words = [keywords_of(p) for _, p in seeds]
    convs, counts = [], {"seeds_without_keywords": 0}
    for i, (_, prompt) in enumerate(seeds):
        own = words[i]
        if len(own) < 2:
            counts["seeds_without_keywords"] += 1
            continue
        chosen = rng.sample(own, min(per_prompt, len(own)))
        noise = [w for j, ws in enumerate(words) if j != i for w in ws if w not in own]
        if noise:
            chosen.append(rng.choice(noise))
        rng.shuffle(chosen)
        convs.append([*prompter_request(chosen), {"role": "assistant", "content": prompt.strip()}])
    return convs, counts


def _seed_pairs(data: pa.Table) -> list[tuple[str, str, str | None]]:
    """(id, prompt, gold response) of every seed row with a user prompt."""
    out = []
    for rid, conv in zip(data.column(S.ID).to_pylist(), data.column(S.MESSAGES).to_pylist(), strict=True):
        prompt = S.prompt_text(conv or [])
        if prompt.strip():
            out.append((rid, prompt, S.last_turn(conv or [], "assistant")))
    return out


class PrompterParams(TrainParams):
    keywords: int = Field(
        3, ge=1, description="keywords taken from each seed prompt (plus one noise keyword)"
    )


class SynPOPrompter(Trainer):
    """SynPO's self-prompt generator: tuned (LoRA) to write a request around keywords, learning from each
    seed prompt with its keywords and one noise keyword from another seed. The seed rows pass through."""

    Params: ClassVar = PrompterParams
    reads = (S.MESSAGES,)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,)}

    def train(self, data: pa.Table, out_dir: Path) -> dict[str, Any]:
        seeds = [(rid, p) for rid, p, _ in _seed_pairs(data)]
        convs, counts = keyword_conversations(seeds, self.params.keywords, self.params.seed or self.ctx.seed)
        if not convs:
            raise FlywheelError(f"{self.name}: no seed prompt has two keywords to learn from")
        stats = train_sft(base_path(self), convs, out_dir, self.params.settings(self.ctx.seed), self.progress)
        return {**stats, **counts}


class ImproverParams(TrainParams):
    policy: str = ModelRef(description="the policy whose responses the improver learns to rewrite (M_{t-1})")
    temperature: float = Field(0.7, ge=0, description="the policy's sampling temperature for its responses")
    top_p: float = Field(0.9, gt=0, le=1, description="the policy's sampling top_p")
    max_tokens: int = Field(256, ge=1, description="tokens per policy response at most")


class SynPOImprover(Trainer):
    """SynPO's response improver of one iteration: the policy answers each seed prompt, and a model tuned
    from ``model`` (the base) learns to rewrite (prompt, that answer) into the seed's gold response. Seeds
    without a gold response, and policy answers that failed or came back empty, are left out and counted.
    The seed rows pass through."""

    Params: ClassVar = ImproverParams
    reads = (S.MESSAGES,)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {"model": (CHAT,), "policy": (CHAT,)}

    def train(self, data: pa.Table, out_dir: Path) -> dict[str, Any]:
        p = self.params
        seeds = [s for s in _seed_pairs(data) if s[2]]
        counts = {"seeds_without_gold": data.num_rows - len(seeds), "failed_policy_answers": 0}
        sampling = Sampling(
            temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, seed=p.seed or self.ctx.seed
        )
        answers = self.ctx.model(p.policy).chat(
            [[{"role": "user", "content": q}] for _, q, _ in seeds], sampling
        )
        convs = []
        for (_, prompt, gold), res in zip(seeds, answers, strict=True):
            text = res.completions[0].text.strip() if res.error is None and res.completions else ""
            if not text:
                counts["failed_policy_answers"] += 1
                continue
            convs.append([*improver_request(prompt, text), {"role": "assistant", "content": gold}])
        if not convs:
            raise FlywheelError(f"{self.name}: the policy answered none of the {len(seeds)} seed prompts")
        stats = train_sft(base_path(self), convs, out_dir, self.params.settings(self.ctx.seed), self.progress)
        return {**stats, **counts}


class PairsParams(GeneratorParams, LLMParams):
    model: str = ModelRef(description="the policy M_{t-1}: it answers the synthetic prompts")
    prompter: str = ModelRef(description="the self-prompt generator (synpo_prompter's output_model)")
    improver: str = ModelRef(description="the response improver (synpo_improver's output_model)")
    judge: str | None = ModelRef("checks the prompts and scores both responses (default: model)", None)
    prompts: int = Field(32, ge=1, description="synthetic prompts written per seed shard")
    keywords: str | None = Field(
        None, description="keyword list file, one per line (default: the keywords of the seed prompts)"
    )
    keywords_per_prompt: int = Field(3, ge=1, description="keywords sampled for each synthetic prompt")
    prompt_temperature: float = Field(1.0, ge=0, description="the prompter's sampling temperature")
    max_tokens: int = Field(256, ge=1, description="tokens per prompt, response and rewrite at most")
    gap: float = Field(
        0.5, ge=0, description="keep a pair when the improved response scores this much higher"
    )
    check_prompts: bool = Field(True, description="the judge must take a prompt for an answerable request")
    judge_mode: Literal["generate", "expected"] = Field(
        "expected",
        description='read "Score: k" from sampled judgements, or the expected score (small judges)',
    )
    judgements: int = Field(3, ge=1, description="judgements averaged per response (generate mode)")
    judge_max_tokens: int = Field(160, ge=1, description="tokens per judgement at most")
    keep_seeds: bool = Field(False, description="the seed rows pass through too")


class SynPOPairs(LLMTask, Generator):
    """SynPO's synthetic preference pairs: keywords -> prompter -> a prompt the judge accepts -> the policy's
    answer (rejected) -> the improver's rewrite (chosen), kept when the judge scores the rewrite at least
    ``gap`` higher. Rows name the seed rows whose keywords were drawn as parents (none with a keyword file),
    and carry ``synpo_keywords``, ``synpo_gap`` and both scores."""

    Params: ClassVar = PairsParams
    reads = (S.MESSAGES,)
    writes = (
        S.PROMPT,
        S.CHOSEN,
        S.REJECTED,
        "synpo_keywords",
        "synpo_scores",
        "score_synpo_gap",
        "prompt_version",
    )

    def model_needs(self) -> dict[str, tuple[str, ...]]:
        judge = (
            (CHAT, LOGPROBS) if self.params.judge_mode == "expected" or self.params.check_prompts else (CHAT,)
        )
        return {"model": (CHAT,), "prompter": (CHAT,), "improver": (CHAT,), "judge": judge}

    def llm(self):
        return self.ctx.model(self.params.judge or self.params.model)

    def sampling(self) -> Sampling:
        p = self.params
        seed = p.seed if p.seed is not None else self.ctx.seed
        return Sampling(temperature=0.7, max_tokens=p.judge_max_tokens, seed=seed)

    def _pool(self, seeds: pa.Table) -> list[tuple[str, str | None]]:
        """(keyword, the seed row it came from) for every keyword to sample from."""
        if self.params.keywords:
            path = self.ctx.path(self.params.keywords)
            words = [w.strip() for w in Path(path).read_text(encoding="utf-8").splitlines() if w.strip()]
            return [(w, None) for w in dict.fromkeys(words)]
        pool: dict[str, str] = {}
        for rid, prompt, _ in _seed_pairs(seeds):
            for w in keywords_of(prompt):
                pool.setdefault(w, rid)
        return sorted(pool.items())

    def generate(self, seeds: pa.Table) -> Iterator[dict]:
        p = self.params
        seed = p.seed if p.seed is not None else self.ctx.seed
        pool = self._pool(seeds)
        if len(pool) < p.keywords_per_prompt:
            self.stats["too_few_keywords"] += 1
            return
        version = digest(
            *(prompts.load(__file__, f"synpo_{f}.txt") for f in ("prompter", "improver", "valid"))
        )[:12]
        rng = random.Random(f"{seed}:{seeds.column(S.ID).to_pylist()[:1]}")
        draws = [rng.sample(pool, p.keywords_per_prompt) for _ in range(p.prompts)]
        write = Sampling(temperature=p.prompt_temperature, top_p=0.95, max_tokens=p.max_tokens, seed=seed)
        written = self.ask_conversations(
            [prompter_request([w for w, _ in d]) for d in draws], text_reply, write, model=p.prompter
        )
        asked = []
        for draw, reply in zip(draws, written, strict=True):
            text = reply.values[0]["text"].strip() if reply.values else ""
            if len(text.split()) < 3:
                self.stats["prompt_unusable"] += 1
                continue
            asked.append((draw, text))
        asked = self._answerable(asked) if p.check_prompts else asked
        greedy = Sampling(temperature=0.0, max_tokens=p.max_tokens)
        answers = self.ask_conversations(
            [[{"role": "user", "content": q}] for _, q in asked], text_reply, greedy, model=p.model
        )
        answered = []
        for (draw, q), reply in zip(asked, answers, strict=True):
            if reply.values and reply.values[0]["text"].strip():
                answered.append((draw, q, reply.values[0]["text"].strip()))
            else:
                self.stats["no_response"] += 1
        rewrites = self.ask_conversations(
            [improver_request(q, y) for _, q, y in answered], text_reply, greedy, model=p.improver
        )
        pairs = []
        for (draw, q, y), reply in zip(answered, rewrites, strict=True):
            better = reply.values[0]["text"].strip() if reply.values else ""
            if not better or better == y:
                self.stats["no_rewrite"] += 1
                continue
            pairs.append((draw, q, y, better))
        scores = judge_responses(
            self,
            [item for _, q, y, w in pairs for item in ((q, w), (q, y))],
            p.judge_mode,
            p.judgements,
            p.judge_max_tokens,
        )
        for k, (draw, q, y, better) in enumerate(pairs):
            s_w, s_y = scores[2 * k], scores[2 * k + 1]
            if s_w is None or s_y is None:
                self.stats["unscored"] += 1
                continue
            if s_w - s_y < p.gap - 1e-9:  # a gap of exactly ``gap`` passes despite float rounding
                self.stats["gap_too_small"] += 1
                continue
            self.stats["pairs"] += 1
            yield {
                S.PROMPT: [{"role": "user", "content": q}],
                S.CHOSEN: [{"role": "assistant", "content": better}],
                S.REJECTED: [{"role": "assistant", "content": y}],
                "synpo_keywords": ", ".join(w for w, _ in draw),
                "synpo_scores": [s_w, s_y],
                "score_synpo_gap": s_w - s_y,
                "prompt_version": version,
                S.PARENTS: sorted({rid for _, rid in draw if rid}),
            }

    def _answerable(self, asked: list[tuple[list, str]]) -> list[tuple[list, str]]:
        """The prompts the judge takes for a clear request it could answer: Yes likelier than No next."""
        template = prompts.load(__file__, "synpo_valid.txt")
        convs = [[{"role": "user", "content": prompts.fill(template, prompt=q)}] for _, q in asked]
        kept = []
        for item, (yes, no) in zip(asked, self.ask_options_of(convs, ["Yes", "No"]), strict=True):
            if not (math.isfinite(yes) or math.isfinite(no)):
                self.stats["prompt_check_unreadable"] += 1
            elif yes > no:
                kept.append(item)
            else:
                self.stats["prompt_rejected"] += 1
        return kept
