"""What ops hold: a named model = a backend (loaded on first use) + the call cache + usage accounting."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from dataflywheel.models.base import (
    CHAT,
    COMPLETE,
    EMBED,
    LOGPROBS,
    Backend,
    ChatResult,
    Completion,
    Conversation,
    LogprobResult,
    ModelError,
    Sampling,
)
from dataflywheel.models.cache import CallCache
from dataflywheel.models.spec import ModelSpec

BACKEND_CAPABILITIES: dict[str, frozenset[str]] = {
    "hf": frozenset({CHAT, LOGPROBS, EMBED, COMPLETE}),
    "openai": frozenset({CHAT, LOGPROBS, EMBED, COMPLETE}),
    "vllm": frozenset({CHAT, LOGPROBS, COMPLETE}),
    "sentence-transformers": frozenset({EMBED}),
}


@dataclass
class Usage:
    """Counted per model; the engine writes each step's difference to the manifest."""

    requests: int = 0  # asked of the backend (cache misses)
    cached: int = 0  # served from the call cache
    failed: int = 0  # still failing after retries
    retries: int = 0
    # asked with a constraint the backend cannot enforce, so sent without it (the parser still decides)
    unconstrained: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cost: float = 0.0

    def minus(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def copy(self) -> Usage:
        return Usage(**asdict(self))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(d["seconds"], 3)
        d["cost"] = round(d["cost"], 6)
        return d


def _scored_tokens(result: Any) -> int:
    return len(result.logprobs or [])


def _quiet_transformers() -> None:
    """Weight-loading progress bars and advisory warnings would bury the run's own progress."""
    try:
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
    except ImportError:
        pass


def build_backend(spec: ModelSpec) -> Backend:
    """A backend from a recipe's ModelSpec (heavy imports happen here, on first use)."""
    if spec.backend in ("hf", "sentence-transformers"):
        _quiet_transformers()
    if spec.backend == "hf":
        from dataflywheel.models.hf import HFBackend

        return HFBackend(
            spec.model,
            spec.device,
            spec.dtype,
            spec.batch_size,
            trust_remote_code=spec.trust_remote_code,
            generate_dtype=spec.generate_dtype,
        )
    if spec.backend == "sentence-transformers":
        from dataflywheel.models.st import SentenceTransformersBackend

        return SentenceTransformersBackend(spec.model, spec.device, trust_remote_code=spec.trust_remote_code)
    if spec.backend == "openai":
        from dataflywheel.models.openai import OpenAIBackend

        return OpenAIBackend(
            spec.model,
            spec.base_url,
            spec.api_key_env,
            spec.max_concurrency,
            spec.timeout_s,
            spec.max_retries,
            structured_outputs=spec.structured_outputs,
        )
    if spec.backend == "vllm":
        from dataflywheel.models.vllm import VLLMBackend

        return VLLMBackend(spec.model, spec.dtype, trust_remote_code=spec.trust_remote_code)
    raise ModelError(f"unknown backend '{spec.backend}'; valid: {', '.join(BACKEND_CAPABILITIES)}")


class Model:
    """A recipe's named model. Deterministic requests go through the cache; everything is counted."""

    def __init__(
        self, name: str, spec: ModelSpec, cache: CallCache | None = None, backend: Backend | None = None
    ):
        self.name, self.spec = name, spec
        self.cache = cache if cache is not None else CallCache(mode=spec.cache)
        self._backend = backend
        self.usage = Usage()

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = build_backend(self.spec)
        return self._backend

    @property
    def capabilities(self) -> frozenset[str]:
        if self._backend is not None:
            return self._backend.capabilities
        return BACKEND_CAPABILITIES.get(self.spec.backend, frozenset())

    def _price(self, prompt: int, completion: int) -> float:
        return (prompt * self.spec.price_per_m_input + completion * self.spec.price_per_m_output) / 1e6

    def _cached(self, kind: str, requests: list[Any], run, encode, decode, count=None) -> list[Any]:
        """Serve what the cache has, ask the backend for the rest, store the successes.

        ``count(result)`` is the number of input tokens a fresh result cost (scored responses), added
        to the usage and its price."""
        fp = self.backend.fingerprint
        keys = [CallCache.key(fp, kind, r) for r in requests]
        hits = self.cache.get_many(keys)
        out: list[Any] = [None] * len(requests)
        misses = []
        for i, k in enumerate(keys):
            if k in hits:
                out[i] = decode(hits[k])
            else:
                misses.append(i)
        self.usage.cached += len(requests) - len(misses)
        if misses:
            start = time.perf_counter()
            fresh = run([requests[i] for i in misses])
            self.usage.seconds += time.perf_counter() - start
            self.usage.requests += len(misses)
            store = {}
            for i, result in zip(misses, fresh, strict=True):
                out[i] = result
                if count is not None:
                    n = count(result)
                    self.usage.prompt_tokens += n
                    self.usage.cost += self._price(n, 0)
                if getattr(result, "error", None) is None:
                    store[keys[i]] = encode(result)
            self.cache.put_many(store)
        return out

    def chat(self, conversations: list[Conversation], sampling: Sampling | None = None) -> list[ChatResult]:
        conversations = [[{"role": m["role"], "content": m["content"]} for m in c] for c in conversations]
        return self._generate("chat", "messages", conversations, self.backend.chat, sampling or Sampling())

    def complete(self, prompts: list[str], sampling: Sampling | None = None) -> list[ChatResult]:
        """Continuations of raw text (no chat template), cached and counted like chat replies."""
        return self._generate(
            "complete", "prompt", list(prompts), self.backend.complete, sampling or Sampling()
        )

    def enforces(self, constraint, kind: str = CHAT) -> bool:
        """Whether this model decodes under ``constraint`` (see ``Backend.enforces``)."""
        return self.backend.enforces(constraint, kind)

    def _generate(self, kind: str, field: str, requests: list, call, sampling: Sampling) -> list[ChatResult]:
        if sampling.constraint is not None and not self.enforces(sampling.constraint, kind):
            if sampling.constraint.required:
                raise ModelError(
                    f"model '{self.name}' ({self.spec.backend}) cannot enforce a {sampling.constraint.kind} "
                    f"constraint on {kind} requests"
                    + (
                        f" (structured_outputs: {self.spec.structured_outputs})"
                        if self.spec.backend == "openai"
                        else ""
                    )
                    + "; use constrained: auto to send it unconstrained and let the parser decide"
                )
            self.usage.unconstrained += len(requests)
            sampling = sampling.model_copy(update={"constraint": None})

        def run(items):
            return call(items, sampling)

        if sampling.deterministic:
            req = [{field: r, "sampling": sampling.model_dump()} for r in requests]
            results = self._cached(
                kind, req, lambda rs: run([r[field] for r in rs]), _chat_to_json, _chat_from_json
            )
        else:
            start = time.perf_counter()
            results = run(requests)
            self.usage.seconds += time.perf_counter() - start
            self.usage.requests += len(requests)
        for r in results:
            self.usage.failed += r.error is not None
            self.usage.retries += r.retries
        fresh = [r for r in results if not getattr(r, "_from_cache", False)]
        p = sum(r.prompt_tokens for r in fresh)
        c = sum(x.tokens for r in fresh for x in r.completions)
        self.usage.prompt_tokens += p
        self.usage.completion_tokens += c
        self.usage.cost += self._price(p, c)
        return results

    def logprobs(self, conversations: list[Conversation], responses: list[str]) -> list[LogprobResult]:
        req = [
            {"messages": [{"role": m["role"], "content": m["content"]} for m in c], "response": r}
            for c, r in zip(conversations, responses, strict=True)
        ]
        return self._scored("logprobs", req, "messages", self.backend.logprobs)

    def text_logprobs(self, prefixes: list[str], responses: list[str]) -> list[LogprobResult]:
        """Response log-probabilities after raw text prefixes (no chat template); hf backend only."""
        if not hasattr(self.backend, "text_logprobs"):
            raise ModelError(
                f"model '{self.name}' ({self.spec.backend}) cannot score raw text; use an hf model"
            )
        req = [{"prefix": p, "response": r} for p, r in zip(prefixes, responses, strict=True)]
        return self._scored("text_logprobs", req, "prefix", self.backend.text_logprobs)

    def _scored(self, kind: str, req: list[dict], context: str, score) -> list[LogprobResult]:
        """Log-probabilities of responses after a context, through the cache; failures counted."""
        results = self._cached(
            kind,
            req,
            lambda rs: score([r[context] for r in rs], [r["response"] for r in rs]),
            lambda r: {"logprobs": r.logprobs},
            lambda d: LogprobResult(d["logprobs"]),
            count=_scored_tokens,
        )
        self.usage.failed += sum(r.error is not None for r in results)
        return results

    def option_logprobs(self, conversations: list[Conversation], options: list[str]) -> list[list[float]]:
        """Per conversation, the log-probability of answering with each option (e.g. "1".."6").

        One forward pass per conversation where the backend can read the next-token distribution (hf);
        elsewhere each option is scored as a response."""
        conversations = [[{"role": m["role"], "content": m["content"]} for m in c] for c in conversations]
        req = [{"messages": c, "options": list(options)} for c in conversations]
        if hasattr(self.backend, "next_token_logprobs"):

            def run(rs):
                return self.backend.next_token_logprobs([r["messages"] for r in rs], list(options))
        else:

            def run(rs):
                flat = [(r["messages"], o) for r in rs for o in options]
                res = self.backend.logprobs([f[0] for f in flat], [f[1] for f in flat])
                vals = [sum(x.logprobs) if x.logprobs else float("-inf") for x in res]
                return [vals[i * len(options) : (i + 1) * len(options)] for i in range(len(rs))]

        return self._cached("option_logprobs", req, run, lambda v: v, lambda v: v)

    def embed(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        req = [{"text": t, **kwargs} for t in texts]
        vecs = self._cached(
            "embed",
            req,
            lambda rs: list(self.backend.embed([r["text"] for r in rs], **kwargs)),
            lambda v: np.asarray(v, dtype=np.float32).tobytes().hex(),
            lambda h: np.frombuffer(bytes.fromhex(h), dtype=np.float32),
        )
        return np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, 0), dtype=np.float32)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


def _chat_to_json(r: ChatResult) -> dict:
    return {"completions": [asdict(c) for c in r.completions], "prompt_tokens": r.prompt_tokens}


def _chat_from_json(d: dict) -> ChatResult:
    result = ChatResult([Completion(**c) for c in d["completions"]], d["prompt_tokens"])
    result._from_cache = True  # counted as cached, not as new tokens
    return result


def load_models(recipe: Any, cache: CallCache | None = None) -> dict[str, Model]:
    """The named models of ``recipe`` (anything with ``models: dict[str, ModelSpec]``); backends load
    lazily, on first use."""
    shared = {}
    out = {}
    for name, spec in recipe.models.items():
        c = cache
        if c is None:
            c = shared.setdefault(spec.cache, CallCache(mode=spec.cache))
        out[name] = Model(name, spec, c)
    return out
