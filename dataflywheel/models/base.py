"""The backend interface every model sits behind.

A backend answers up to three questions, and declares which (``capabilities``):

* ``chat(conversations, sampling)``: n completions per conversation, with token counts and finish reasons;
* ``logprobs(conversations, responses)``: the log-probability of each token of each response, given its
  conversation, under the model's chat template (response tokens only: the prompt is context);
* ``embed(texts)``: one float32 vector per text;
* ``complete(prompts, sampling)``: n continuations of raw text, no chat template applied (Magpie samples a
  user turn from the template's text before one).

Backends never raise for one bad request in a batch: a request that fails for good comes back with its
``error`` set, so the op can record it on its row and the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dataflywheel.errors import FlywheelError
from dataflywheel.models.constraint import Constraint

CHAT, LOGPROBS, EMBED, COMPLETE = "chat", "logprobs", "embed", "complete"
Conversation = list[dict]


class ModelError(FlywheelError):
    """A model that cannot be loaded or asked (missing package, no GPU, unreachable server)."""


class Sampling(BaseModel):
    """How to sample a completion; the defaults are greedy, which the call cache can always serve."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.0, ge=0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int = Field(256, ge=1, description="new tokens at most")
    n: int = Field(1, ge=1, description="completions per conversation")
    stop: list[str] | None = Field(None, description="stop strings (not included in the text)")
    seed: int | None = Field(None, description="sampling seed; seeded requests are cached")
    logprobs: bool = Field(False, description="return the log-probability of each generated token")
    constraint: Constraint | None = Field(
        None, description="the shape the reply must take (JSON schema, regex, choice, grammar)"
    )

    @property
    def deterministic(self) -> bool:
        return self.temperature == 0 or self.seed is not None


@dataclass
class Completion:
    text: str
    finish_reason: str  # stop | length | error
    tokens: int = 0
    logprobs: list[float] | None = None
    token_strs: list[str] | None = None  # the generated tokens as text, beside their logprobs


@dataclass
class ChatResult:
    completions: list[Completion] = field(default_factory=list)
    prompt_tokens: int = 0
    error: str | None = None
    retries: int = 0

    @property
    def text(self) -> str | None:
        return self.completions[0].text if self.completions else None


@dataclass
class LogprobResult:
    logprobs: list[float] | None  # one per response token
    error: str | None = None

    @property
    def mean_nll(self) -> float | None:
        if not self.logprobs:
            return None
        return -float(np.mean(self.logprobs))


class Backend:
    """Base class of the backends; subclasses set ``capabilities`` and implement what they declare."""

    capabilities: frozenset[str] = frozenset()
    name: str = "backend"

    @property
    def fingerprint(self) -> str:
        """Identifies the exact model (weights, template): the call cache keys on it."""
        raise NotImplementedError

    def chat(self, conversations: list[Conversation], sampling: Sampling) -> list[ChatResult]:
        raise ModelError(f"{self.name} cannot chat")

    def complete(self, prompts: list[str], sampling: Sampling) -> list[ChatResult]:
        raise ModelError(f"{self.name} cannot continue raw text")

    def logprobs(self, conversations: list[Conversation], responses: list[str]) -> list[LogprobResult]:
        raise ModelError(f"{self.name} cannot score log-probabilities")

    def embed(self, texts: list[str]) -> np.ndarray:
        raise ModelError(f"{self.name} cannot embed")

    def enforces(self, constraint: Constraint, kind: str = CHAT) -> bool:
        """Whether ``chat`` (or ``complete``, ``kind``) decodes under ``constraint``; a backend that
        cannot gets the request without it."""
        return False

    def close(self) -> None:
        """Free what the backend holds (GPU memory, connections)."""
