"""The `openai` backend: any OpenAI-compatible server (vLLM, llama.cpp, Ollama, OpenAI, flywheel serve).

Requests run concurrently (asyncio + httpx, at most ``max_concurrency`` in flight). Timeouts, connection
errors, 429, 5xx and malformed JSON are retried with exponential backoff and jitter, honouring a
``Retry-After`` header; a request that still fails comes back with ``error`` set, so the op records it on
its row and the run goes on. The API key is read from the environment variable the recipe names and is
never written anywhere.

Response log-probabilities (``logprobs``) use the ``/score`` extension that ``flywheel serve`` offers;
standard OpenAI servers only return log-probabilities of tokens they generate (``Sampling.logprobs``).
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import threading
import time
from typing import Any

import numpy as np

from dataflywheel.hashing import digest
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
from dataflywheel.models.constraint import Constraint

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class RequestFailed(Exception):
    def __init__(self, message: str, retries: int):
        super().__init__(message)
        self.retries = retries


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIBackend(Backend):
    capabilities = frozenset({CHAT, LOGPROBS, EMBED, COMPLETE})
    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None,
        api_key_env: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        structured_outputs: str = "openai",
    ):
        try:
            import httpx  # noqa: F401
        except ImportError:
            raise ModelError("the openai backend needs httpx: pip install httpx") from None
        if not base_url:
            raise ModelError("the openai backend needs base_url, e.g. http://127.0.0.1:8000/v1")
        self.model, self.base_url = model, base_url.rstrip("/")
        self.max_concurrency, self.timeout_s, self.max_retries = max_concurrency, timeout_s, max_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.structured_outputs = structured_outputs
        self._headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ModelError(f"environment variable {api_key_env} (api_key_env) is not set")
            self._headers["Authorization"] = f"Bearer {key}"

    @property
    def fingerprint(self) -> str:
        return digest("openai", self.base_url, self.model)

    # ------------------------------------------------------------------ transport
    async def _post(self, client, path: str, payload: dict, check=None) -> tuple[dict, int]:
        """The JSON answer to one request, retried on transport errors, 429/5xx, malformed JSON and answers
        ``check`` finds wrong (it returns what is wrong, or None)."""
        import httpx

        err = "no attempt"
        for attempt in range(self.max_retries + 1):
            wait = None
            try:
                resp = await client.post(f"{self.base_url}{path}", json=payload, headers=self._headers)
            except httpx.TimeoutException:
                err = f"timed out after {self.timeout_s:g} s"
            except httpx.TransportError as e:
                err = f"connection error: {type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    try:
                        data = resp.json()
                        if not isinstance(data, dict):
                            raise ValueError("not an object")
                    except ValueError:
                        err = f"malformed JSON in the response: {resp.text[:80]!r}"
                    else:
                        problem = check(data) if check else None
                        if problem is None:
                            return data, attempt
                        err = problem
                elif resp.status_code in RETRY_STATUS:
                    err = f"HTTP {resp.status_code}: {resp.text[:200]}"
                    wait = retry_after(resp.headers.get("retry-after"))
                else:  # 4xx other than those: asking again will not help
                    raise RequestFailed(f"HTTP {resp.status_code}: {resp.text[:300]}", attempt)
            if attempt < self.max_retries:
                if wait is None:
                    wait = min(self.backoff_max, self.backoff_base * 2**attempt) * random.uniform(0.5, 1.5)
                await asyncio.sleep(min(wait, self.backoff_max))
        raise RequestFailed(f"{err} (after {self.max_retries} retries)", self.max_retries)

    def _run_all(
        self, path: str, payloads: list[dict], check=None
    ) -> list[tuple[dict | None, int, str | None]]:
        async def main():
            import httpx

            sem = asyncio.Semaphore(self.max_concurrency)
            limits = httpx.Limits(max_connections=self.max_concurrency)
            async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:

                async def one(p):
                    async with sem:
                        try:
                            data, retries = await self._post(client, path, p, check)
                            return data, retries, None
                        except RequestFailed as e:
                            return None, e.retries, str(e)

                return await asyncio.gather(*(one(p) for p in payloads))

        return _run_coroutine(main())

    # ------------------------------------------------------------------ API
    def enforces(self, constraint: Constraint, kind: str = CHAT) -> bool:
        return constraint_fields(self.structured_outputs, constraint, kind) is not None

    def chat(self, conversations: list[Conversation], sampling: Sampling) -> list[ChatResult]:
        payloads = [{**self._sampling(sampling, CHAT), "messages": c} for c in conversations]
        return self._results(self._run_all("/chat/completions", payloads, check=_chat_problem), _parse_chat)

    def complete(self, prompts: list[str], sampling: Sampling) -> list[ChatResult]:
        """Raw-text continuations through the legacy ``/completions`` endpoint (vLLM serves it)."""
        payloads = [{**self._sampling(sampling, COMPLETE), "prompt": p} for p in prompts]
        return self._results(self._run_all("/completions", payloads, check=_text_problem), _parse_text)

    def _sampling(self, sampling: Sampling, kind: str) -> dict:
        base = {
            "model": self.model,
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.stop:
            base["stop"] = sampling.stop
        if sampling.seed is not None:
            base["seed"] = sampling.seed
        if sampling.logprobs:
            base["logprobs"] = True
        if sampling.constraint is not None:  # the model strips what this server cannot enforce
            base.update(constraint_fields(self.structured_outputs, sampling.constraint, kind) or {})
        return base

    @staticmethod
    def _results(answers, parse) -> list[ChatResult]:
        out = []
        for data, retries, err in answers:
            if err is not None:
                out.append(ChatResult(error=err, retries=retries))
                continue
            try:
                out.append(parse(data, retries))
            except (KeyError, TypeError, IndexError) as e:
                out.append(
                    ChatResult(error=f"unexpected response shape: {type(e).__name__} {e}", retries=retries)
                )
        return out

    def logprobs(self, conversations: list[Conversation], responses: list[str]) -> list[LogprobResult]:
        payloads = [
            {"model": self.model, "messages": c, "response": r}
            for c, r in zip(conversations, responses, strict=True)
        ]
        out = []
        for data, _, err in self._run_all("/score", payloads):
            if err is not None:
                if "HTTP 404" in err:
                    err = (
                        "this server offers no response log-probabilities (/score); use flywheel serve or hf"
                    )
                out.append(LogprobResult(None, err))
            else:
                out.append(LogprobResult(data.get("logprobs"), data.get("error")))
        return out

    def embed(self, texts: list[str]) -> np.ndarray:
        chunks = [texts[i : i + 64] for i in range(0, len(texts), 64)]
        answers = self._run_all("/embeddings", [{"model": self.model, "input": c} for c in chunks])
        vecs = []
        for data, _, err in answers:
            if err is not None:
                raise ModelError(f"embeddings from {self.base_url} failed: {err}")
            vecs += [d["embedding"] for d in sorted(data["data"], key=lambda d: d["index"])]
        return np.asarray(vecs, dtype=np.float32)


def constraint_fields(server: str, constraint: Constraint, kind: str = CHAT) -> dict | None:
    """The request fields that ask a server of kind ``server`` (``ModelSpec.structured_outputs``) for
    ``constraint`` on a chat or raw-text request, or None when that server cannot take it.

    JSON schemas go as OpenAI's ``response_format`` (strict) on chat requests wherever a server takes it;
    vLLM (0.12 and newer) takes the rest as ``structured_outputs``, older vLLM as ``guided_*``, SGLang as
    ``regex`` and ``ebnf`` (a choice list as a regex of its alternatives). Parts go as one regex, their
    free text bounded in characters (``CHARS_PER_TOKEN`` a token) where llguidance bounds it in tokens."""
    c = constraint.portable()  # parts as one regex
    k = c.kind
    if server == "none":
        return None
    if k == "json_schema" and kind == CHAT and server != "vllm-legacy":
        schema = {"name": "reply", "schema": c.json_schema, "strict": True}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    if server == "vllm":
        return {"structured_outputs": {"json" if k == "json_schema" else k: getattr(c, k)}}
    if server == "vllm-legacy":
        return {f"guided_{'json' if k == 'json_schema' else k}": getattr(c, k)}
    if server == "sglang":
        if k == "json_schema":
            return {"json_schema": c.text}
        if k == "grammar":
            return {"ebnf": c.grammar}
        return {"regex": c.choice_regex() if k == "choice" else c.regex}
    return None


def _chat_problem(data: dict) -> str | None:
    """What is wrong with a 200 answer to a chat request: no choices, or a choice without text. Such an
    answer is retried and, if it stays so, recorded as a failure (never cached as a reply)."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return "the server answered with no choices"
    for choice in choices:
        content = (choice.get("message") or {}).get("content") if isinstance(choice, dict) else None
        if not isinstance(content, str) or not content.strip():
            return f"the server answered with {'no' if content is None else 'empty'} content"
    return None


def _text_problem(data: dict) -> str | None:
    """As ``_chat_problem``, for a raw-text completion (choices carry ``text``)."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return "the server answered with no choices"
    for choice in choices:
        text = choice.get("text") if isinstance(choice, dict) else None
        if not isinstance(text, str) or not text.strip():
            return f"the server answered with {'no' if text is None else 'empty'} text"
    return None


def _parse_chat(data: dict, retries: int) -> ChatResult:
    comps = []
    for choice in sorted(data["choices"], key=lambda c: c.get("index", 0)):
        content = choice["message"].get("content") or ""
        lp = choice.get("logprobs") or {}
        items = lp.get("content") if isinstance(lp, dict) else None
        comps.append(
            Completion(
                text=content,
                finish_reason=choice.get("finish_reason") or "stop",
                tokens=0,
                logprobs=[t["logprob"] for t in items] if items else None,
                token_strs=[t.get("token", "") for t in items] if items else None,
            )
        )
    return _with_usage(comps, data, retries)


def _parse_text(data: dict, retries: int) -> ChatResult:
    comps = [
        Completion(text=choice["text"], finish_reason=choice.get("finish_reason") or "stop")
        for choice in sorted(data["choices"], key=lambda c: c.get("index", 0))
    ]
    return _with_usage(comps, data, retries)


def _with_usage(comps: list[Completion], data: dict, retries: int) -> ChatResult:
    usage = data.get("usage") or {}
    total = usage.get("completion_tokens", 0)
    for c in comps:  # the server reports one total; split it evenly for per-completion counts
        c.tokens = total // max(len(comps), 1)
    return ChatResult(comps, prompt_tokens=usage.get("prompt_tokens", 0), retries=retries)


def _run_coroutine(coro) -> Any:
    """asyncio.run, also from code that already runs inside an event loop (notebooks, servers)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # handed back to the caller's thread
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
