"""A scripted model for fast unit tests of model-backed ops: prompt building, parsing and error paths.

Never the only test of a method (METHODS.md 0.1): each op also runs on the real SmolLM2 in its
integration test. The script answers from what the prompt contains, so tests read like a conversation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dataflywheel.models.base import (
    CHAT,
    COMPLETE,
    EMBED,
    LOGPROBS,
    Backend,
    ChatResult,
    Completion,
    LogprobResult,
)
from dataflywheel.models.client import Model
from dataflywheel.ops.base import OpContext
from dataflywheel.recipe.models import ModelSpec

Reply = str | Callable[[list[dict]], str] | None


class ScriptedBackend(Backend):
    """Answers each conversation from ``script``: (substring of the last message, reply) pairs tried in
    order, then ``default``. A reply of None is a request that failed after its retries; a callable
    reply gets the conversation (once per completion). ``option_logprobs`` (a callable of the
    conversation) answers next-token questions; ``logprob`` the per-token log-probability of scored
    responses (a number, or a callable of the context and the response); ``finish`` is every
    completion's finish reason; ``vector`` (a callable of the text) embeds, else a text's length."""

    capabilities = frozenset({CHAT, LOGPROBS, EMBED, COMPLETE})
    name = "scripted"

    def __init__(
        self,
        script: list[tuple[str, Reply]] | None = None,
        default: Reply = "",
        option_logprobs: Callable[[list[dict], list[str]], list[float]] | None = None,
        logprob: float | Callable[[list[dict], str], float] = -1.0,
        finish: str = "stop",
        vector: Callable[[str], list[float]] | None = None,
    ):
        self.script = list(script or [])
        self.finish = finish
        self.default = default
        self._options = option_logprobs
        self.logprob = logprob
        self.calls: list[list[dict]] = []
        self.vector = vector
        self.samplings: list = []  # the sampling of every chat call, in order

    @property
    def fingerprint(self) -> str:
        return f"scripted-{id(self)}"

    def _reply(self, conv: list[dict]) -> Reply:
        last = conv[-1]["content"] if conv else ""
        for needle, reply in self.script:
            if needle in last:
                return reply
        return self.default

    def chat(self, conversations, sampling):
        self.samplings.append(sampling)
        return [self._answer(c, sampling.n, sampling.logprobs) for c in conversations]

    def complete(self, prompts, sampling):
        """Raw-text continuations: the script sees the prompt as one message of role "text"."""
        return [
            self._answer([{"role": "text", "content": p}], sampling.n, sampling.logprobs) for p in prompts
        ]

    def _answer(self, conv: list[dict], n: int, logprobs: bool = False) -> ChatResult:
        """n completions from the script (a callable reply is called once per completion); with
        ``logprobs``, one log-probability per word from ``logprob``."""
        self.calls.append(conv)
        reply = self._reply(conv)
        texts = [reply(conv) if callable(reply) else reply for _ in range(n)]
        if any(t is None for t in texts):
            return ChatResult(error="scripted failure", retries=2)
        comps = [Completion(t, self.finish, len(t.split())) for t in texts]
        if logprobs:
            for c in comps:
                lp = self.logprob(conv, c.text) if callable(self.logprob) else self.logprob
                c.logprobs = [lp] * max(1, c.tokens)
        return ChatResult(comps, prompt_tokens=sum(len(m["content"].split()) for m in conv))

    def logprobs(self, conversations, responses):
        self.calls.extend(conversations)
        out = []
        for conv, r in zip(conversations, responses, strict=True):
            lp = self.logprob(conv, r) if callable(self.logprob) else self.logprob
            out.append(LogprobResult([lp] * max(1, len(r.split()))))
        return out

    def next_token_logprobs(self, conversations, options):
        self.calls.extend(conversations)
        if self._options is None:
            return [[0.0] * len(options) for _ in conversations]
        return [list(self._options(c, options)) for c in conversations]

    def embed(self, texts, **kwargs):
        if self.vector is not None:
            return np.asarray([self.vector(t) for t in texts], dtype=np.float32)
        return np.stack([np.full(4, float(len(t)), dtype=np.float32) for t in texts])


def scripted_model(backend: ScriptedBackend, name: str = "m") -> Model:
    spec = ModelSpec(backend="hf", model="scripted", cache="off")
    return Model(name, spec, backend=backend)


def context(**backends: ScriptedBackend) -> OpContext:
    """An OpContext whose models are the given scripted backends, by name."""
    return OpContext(models={name: scripted_model(b, name) for name, b in backends.items()})
