"""The OpenAI-compatible app: /v1/models, /v1/chat/completions, /v1/completions (raw text, no chat
template), /v1/embeddings, and /v1/score (an extension: log-probabilities of given responses, which the
`openai` backend uses for IFD and friends)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Literal

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from dataflywheel.models.base import CHAT, COMPLETE, EMBED, LOGPROBS, Backend, Sampling
from dataflywheel.serve.batcher import Batcher, Busy


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we do not use (user, tools, ...)
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    n: int = Field(1, ge=1, le=64)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: str | list[str]
    n: int = Field(1, ge=1, le=64)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(16, ge=1)  # OpenAI's default for this endpoint
    stop: str | list[str] | None = None
    seed: int | None = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    input: str | list[str]


class ScoreRequest(BaseModel):
    model: str | None = None
    messages: list[Message]
    response: str


def _sampling(req: ChatRequest | CompletionRequest, max_tokens: int, logprobs: bool = False) -> Sampling:
    """A request's sampling options (OpenAI's stop: one string or a list)."""
    return Sampling(
        temperature=req.temperature,
        top_p=req.top_p,
        n=req.n,
        seed=req.seed,
        max_tokens=max_tokens,
        stop=[req.stop] if isinstance(req.stop, str) else req.stop,
        logprobs=logprobs,
    )


def _answer(
    prefix: str, kind: str, model: str, choices: list, prompt_tokens: int, completion: int
) -> Response:
    """An OpenAI response body: id, object, model, choices and usage."""
    body = {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        },
    }
    return Response(orjson.dumps(body), media_type="application/json")


def _error(status: int, message: str, kind: str, param: str | None = None, headers=None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param or None, "code": None}}
    return JSONResponse(body, status, headers=headers)


def _conversation(messages: list[Message]) -> list[dict]:
    """OpenAI messages as the backends take them ("developer" is the newer name of "system")."""
    return [
        {"role": "system" if m.role == "developer" else m.role, "content": _text(m.content)} for m in messages
    ]


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type", "text") == "text")


def create_app(
    name: str,
    chat: Backend | None = None,
    embedder: Backend | None = None,
    api_key: str | None = None,
    max_batch: int = 16,
    max_queue: int = 256,
) -> FastAPI:
    app = FastAPI(title="dataflywheel serve")

    def run(key: str, items: list[Any]) -> list[Any]:
        kind, _, params = key.partition("|")
        if kind == "chat":
            return chat.chat(items, Sampling.model_validate_json(params))
        if kind == "complete":
            return chat.complete(items, Sampling.model_validate_json(params))
        if kind == "score":
            return chat.logprobs([i[0] for i in items], [i[1] for i in items])
        texts = [t for batch in items for t in batch]
        vecs = (embedder or chat).embed(texts)
        out, start = [], 0
        for batch in items:
            out.append(vecs[start : start + len(batch)])
            start += len(batch)
        return out

    batcher = Batcher(run, max_batch=max_batch, max_queue=max_queue)

    class Gone(Exception):
        """The client disconnected while its request waited."""

    async def answered(request: Request, key: str, items: list[Any]) -> list[Any]:
        """The results of ``items`` submitted together; while they wait, a client that disconnects has
        them cancelled (a request whose batch has not started is never run)."""
        futures = [batcher.submit(key, item) for item in items]
        waiting = asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=0.25)
            if done:
                return waiting.result()
            if await request.is_disconnected():
                for f in futures:
                    f.cancel()
                waiting.cancel()
                raise Gone

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy):
        message = f"the server is busy ({batcher.max_queue} requests waiting); retry in {exc.retry_after} s"
        return _error(429, message, "rate_limit_error", headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(Gone)
    async def gone(request: Request, exc: Gone):
        return Response(status_code=499)  # nobody reads it: the client is gone

    # Errors in OpenAI's shape, so clients (the openai package, LangChain) show the message.
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(
            exc.status_code, "invalid_request_error"
        )
        return _error(exc.status_code, str(exc.detail), kind, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}", "invalid_request_error", where)

    @app.middleware("http")
    async def auth(request: Request, call_next):
        authorized = request.headers.get("authorization") == f"Bearer {api_key}"
        if api_key and request.url.path.startswith("/v1") and not authorized:
            return _error(401, "invalid or missing API key", "authentication_error")
        return await call_next(request)

    def check(model: str | None, backend: Backend | None, capability: str) -> None:
        if backend is None or capability not in backend.capabilities:
            raise HTTPException(404, f"this server has no model that can {capability}")
        if model not in (None, name, getattr(backend, "spec", None)):
            raise HTTPException(404, f"model '{model}' is not served here; this server serves '{name}'")

    @app.get("/v1/models")
    async def models():
        caps = sorted(
            (chat.capabilities if chat else frozenset())
            | (embedder.capabilities if embedder else frozenset())
        )
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "dataflywheel",
                    "capabilities": caps,
                }
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request):
        check(req.model, chat, CHAT)
        max_tokens = req.max_completion_tokens or req.max_tokens or 256
        sampling = _sampling(req, max_tokens, logprobs=req.logprobs)
        conv = _conversation(req.messages)
        (result,) = await answered(request, f"chat|{sampling.model_dump_json()}", [conv])
        if result.error:
            raise HTTPException(400, result.error)
        choices = []
        for i, c in enumerate(result.completions):
            lp = None
            if req.logprobs and c.logprobs is not None:
                lp = {
                    "content": [
                        {"token": t, "logprob": v, "bytes": list(t.encode()), "top_logprobs": []}
                        for t, v in zip(c.token_strs or [""] * len(c.logprobs), c.logprobs, strict=True)
                    ]
                }
            choices.append(
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c.text},
                    "finish_reason": c.finish_reason,
                    "logprobs": lp,
                }
            )
        completion = sum(c.tokens for c in result.completions)
        return _answer("chatcmpl", "chat.completion", name, choices, result.prompt_tokens, completion)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        check(req.model, chat, COMPLETE)
        sampling = _sampling(req, req.max_tokens)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        key = f"complete|{sampling.model_dump_json()}"
        results = await answered(request, key, prompts)
        failed = next((r.error for r in results if r.error), None)
        if failed:
            raise HTTPException(400, failed)
        choices = [
            {"index": i * req.n + j, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
            for i, r in enumerate(results)
            for j, c in enumerate(r.completions)
        ]
        prompt_tokens = sum(r.prompt_tokens for r in results)
        completion = sum(c.tokens for r in results for c in r.completions)
        return _answer("cmpl", "text_completion", name, choices, prompt_tokens, completion)

    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingRequest, request: Request):
        backend = embedder or chat
        check(req.model, backend, EMBED)
        texts = [req.input] if isinstance(req.input, str) else req.input
        (vecs,) = await answered(request, "embed|", [texts])
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vecs)]
        tokens = sum(len(t.split()) for t in texts)
        return Response(
            orjson.dumps(
                {
                    "object": "list",
                    "data": data,
                    "model": name,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            ),
            media_type="application/json",
        )

    @app.post("/v1/score")
    async def score(req: ScoreRequest, request: Request):
        check(req.model, chat, LOGPROBS)
        conv = _conversation(req.messages)
        (result,) = await answered(request, "score|", [(conv, req.response)])
        return {"logprobs": result.logprobs, "error": result.error}

    return app
