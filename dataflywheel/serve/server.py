"""The OpenAI-compatible app: /v1/models, /v1/chat/completions, /v1/completions (raw text, no chat
template), both also streamed (`stream: true`, server-sent events), /v1/embeddings, /v1/score (an
extension: log-probabilities of given responses, which the `openai` backend uses for IFD and friends) and
/health (what is running and waiting).

Generation on an hf model runs by continuous batching (`serve.decoder`): requests join and leave the
running batch per decoding step, and a client that goes away has its rows dropped at the next step. Other
backends, scoring and embedding run by dynamic batching (`serve.batcher`). Both share the model under one
lock, taken per forward pass.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import defaultdict
from typing import Any, Literal

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dataflywheel.models.base import CHAT, COMPLETE, EMBED, LOGPROBS, Backend, Sampling
from dataflywheel.models.constraint import Constraint, ConstraintError
from dataflywheel.models.hf import HFBackend
from dataflywheel.serve.batcher import Batcher, Busy
from dataflywheel.serve.decoder import Decoder


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = ""


class Structured(BaseModel):
    """Output constraints as the servers this project talks to take them: OpenAI's ``response_format``,
    vLLM's ``structured_outputs`` (and its older ``guided_*`` fields), SGLang's ``regex`` / ``ebnf`` /
    ``json_schema``. At most one may be given."""

    model_config = ConfigDict(extra="allow")
    response_format: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    regex: str | None = None
    ebnf: str | None = None
    json_schema: str | dict[str, Any] | None = None


def _constraint(req: Structured) -> Constraint | None:
    """The request's output constraint, or None; a malformed or doubly given one is a 400 before any
    decoding."""
    asked: list[tuple[str, dict]] = []
    fmt = req.response_format
    if fmt is not None:
        kind = fmt.get("type")
        if kind == "json_object":
            asked.append(("response_format", {"json_schema": {"type": "object"}}))
        elif kind == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                raise HTTPException(400, "response_format.json_schema.schema: expected a JSON schema object")
            asked.append(("response_format", {"json_schema": schema}))
        elif kind != "text":
            raise HTTPException(
                400, f"response_format.type: expected text, json_object or json_schema, got {kind!r}"
            )
    for key, value in (req.structured_outputs or {}).items():
        if key not in ("json", "regex", "choice", "grammar"):
            raise HTTPException(
                400, f"structured_outputs.{key}: not supported (json, regex, choice, grammar)"
            )
        asked.append((f"structured_outputs.{key}", {"json_schema" if key == "json" else key: value}))
    pairs = [
        ("guided_json", "json_schema", req.guided_json),
        ("guided_regex", "regex", req.guided_regex),
        ("guided_choice", "choice", req.guided_choice),
        ("guided_grammar", "grammar", req.guided_grammar),
        ("regex", "regex", req.regex),
        ("ebnf", "grammar", req.ebnf),
        ("json_schema", "json_schema", req.json_schema),
    ]
    for field, kind, value in pairs:
        if value is not None:
            if kind == "json_schema" and isinstance(value, str):
                try:
                    value = orjson.loads(value)
                except orjson.JSONDecodeError as e:
                    raise HTTPException(400, f"{field}: not JSON: {e}") from None
            asked.append((field, {kind: value}))
    if not asked:
        return None
    if len(asked) > 1:
        raise HTTPException(400, f"one output constraint at most; got {', '.join(a[0] for a in asked)}")
    field, value = asked[0]
    try:
        return Constraint(**value)
    except ValidationError as e:
        first = e.errors()[0]
        raise HTTPException(400, f"{field}: {first.get('msg', 'invalid constraint')}") from None


class ChatRequest(Structured):
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
    stream: bool = False
    stream_options: dict[str, Any] | None = None


class CompletionRequest(Structured):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: str | list[str]
    n: int = Field(1, ge=1, le=64)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(16, ge=1)  # OpenAI's default for this endpoint
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None


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
        constraint=_constraint(req),
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


def _error_body(message: str, kind: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param or None, "code": None}}


def _error(status: int, message: str, kind: str, param: str | None = None, headers=None) -> JSONResponse:
    return JSONResponse(_error_body(message, kind, param), status, headers=headers)


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


def _sse(body: dict) -> str:
    return f"data: {orjson.dumps(body).decode()}\n\n"


def create_app(
    name: str,
    chat: Backend | None = None,
    embedder: Backend | None = None,
    api_key: str | None = None,
    max_batch: int = 64,
    max_queue: int = 256,
    continuous: bool = True,
) -> FastAPI:
    """The app. ``continuous=False`` generates by dynamic batching even on an hf model (whole requests
    grouped in arrival order): the baseline that `bench/serve_overhead.py` measures against."""
    app = FastAPI(title="dataflywheel serve")
    lock = threading.Lock()  # one forward pass at a time on the model

    def run(key: str, items: list[Any]) -> list[Any]:
        kind, _, params = key.partition("|")
        with lock:
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
    decoder = None
    if continuous and isinstance(chat, HFBackend):
        try:
            decoder = Decoder(chat, max_batch=max_batch, max_queue=max_queue, lock=lock)
        except TypeError:  # a cache that cannot be spliced (sliding windows, ...): whole-request batches
            decoder = None
    app.state.decoder, app.state.batcher = decoder, batcher
    stats = {"completed": 0, "cancelled": 0}

    class Gone(Exception):
        """The client disconnected while its request waited."""

    async def waited(request: Request, futures: list, cancel) -> list[Any]:
        """The futures' results; a client that disconnects meanwhile has them cancelled."""
        waiting = asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=0.25)
            if done:
                return waiting.result()
            if await request.is_disconnected():
                cancel()
                waiting.cancel()
                stats["cancelled"] += 1
                raise Gone

    async def answered(request: Request, key: str, items: list[Any]) -> list[Any]:
        """The results of ``items`` submitted together to the batcher (a request whose batch has not
        started when its client goes away is never run)."""
        futures = [batcher.submit(key, item) for item in items]
        return await waited(request, futures, lambda: [f.cancel() for f in futures])

    def start(kind: str, items: list, sampling: Sampling, on_text_of=None) -> tuple[list, Any]:
        """Futures of ``items`` (conversations or raw prompts) and a function that cancels them, all
        queued or none: on the decoder (prompt i's text handed to ``on_text_of(i)`` as it is decoded) or,
        without one, on the batcher."""
        futures, cancels = [], []
        if sampling.constraint is not None and not chat.enforces(sampling.constraint, kind):
            raise HTTPException(
                400, f"this server's model cannot enforce a {sampling.constraint.kind} constraint"
            )
        try:
            for i, item in enumerate(items):
                if decoder is None:
                    future = batcher.submit(f"{kind}|{sampling.model_dump_json()}", item)
                    futures.append(future)
                    cancels.append(future.cancel)
                else:
                    ids = chat.encode(chat.render(item) if kind == "chat" else item)
                    handle = decoder.submit(ids, sampling, on_text_of(i) if on_text_of else None)
                    futures.append(handle.future)
                    cancels.append(handle.cancel)
        except (Busy, ConstraintError) as e:
            for c in cancels:
                c()
            if isinstance(e, ConstraintError):
                raise HTTPException(400, str(e)) from None
            raise
        return futures, lambda: [c() for c in cancels]

    async def generated(request: Request, kind: str, items: list, sampling: Sampling) -> list:
        futures, cancel = start(kind, items, sampling)
        results = await waited(request, futures, cancel)
        stats["completed"] += 1
        return results

    def streamed(request: Request, kind: str, items: list, sampling: Sampling, chunk, usage: bool):
        """Server-sent events: text as it is decoded (one event per step and choice), then each choice's
        rest and finish reason, usage if asked, and ``[DONE]``. A client that goes away has its rows
        dropped at the next step."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def on_text_of(i: int):  # each prompt's choices are numbered i * n + j
            return lambda j, text: loop.call_soon_threadsafe(queue.put_nowait, (i * sampling.n + j, text))

        futures, cancel = start(kind, items, sampling, on_text_of)
        early = [f.result() for f in futures if f.done() and not f.exception()]
        failed = next((r.error for r in early if r.error), None)
        if failed:  # a prompt too long: an error before any event
            cancel()
            raise HTTPException(400, failed)

        async def events():
            results = asyncio.ensure_future(asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))
            sent: dict[int, str] = defaultdict(str)
            finished = False
            try:
                if kind == "chat":
                    yield _sse(
                        chunk(
                            [
                                (j, {"role": "assistant", "content": ""}, None)
                                for j in range(len(items) * sampling.n)
                            ]
                        )
                    )
                while not results.done():
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait(
                        {getter, results}, timeout=0.25, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter in done:
                        index, text = getter.result()
                        sent[index] += text
                        yield _sse(chunk([(index, text, None)]))
                    else:
                        getter.cancel()
                        if not done and await request.is_disconnected():
                            return
                while not queue.empty():
                    index, text = queue.get_nowait()
                    sent[index] += text
                    yield _sse(chunk([(index, text, None)]))
                try:
                    answers = results.result()
                except Exception as e:  # cancelled, or the model failed
                    yield _sse(_error_body(str(e) or type(e).__name__, "server_error"))
                    return
                total_prompt, total_completion = 0, 0
                for i, r in enumerate(answers):
                    total_prompt += r.prompt_tokens
                    if r.error:
                        yield _sse(_error_body(r.error, "invalid_request_error"))
                        return
                    for j, c in enumerate(r.completions):
                        index = i * sampling.n + j
                        total_completion += c.tokens
                        rest = c.text[len(sent[index]) :] if c.text.startswith(sent[index]) else ""
                        yield _sse(chunk([(index, rest, c.finish_reason)]))
                if usage:
                    yield _sse(
                        chunk(
                            [],
                            usage={
                                "prompt_tokens": total_prompt,
                                "completion_tokens": total_completion,
                                "total_tokens": total_prompt + total_completion,
                            },
                        )
                    )
                yield "data: [DONE]\n\n"
                finished = True
                stats["completed"] += 1
            finally:
                if not finished:
                    stats["cancelled"] += 1
                cancel()
                results.cancel()

        return StreamingResponse(events(), media_type="text/event-stream")

    def chunker(prefix: str, kind: str):
        ident, created = f"{prefix}-{uuid.uuid4().hex}", int(time.time())

        def chunk(parts: list, usage: dict | None = None) -> dict:
            choices = []
            for index, content, finish in parts:
                if kind == "chat.completion.chunk":
                    delta = (
                        content if isinstance(content, dict) else ({"content": content} if content else {})
                    )
                    choices.append(
                        {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
                    )
                else:
                    choices.append(
                        {"index": index, "text": content, "finish_reason": finish, "logprobs": None}
                    )
            body = {"id": ident, "object": kind, "created": created, "model": name, "choices": choices}
            if usage is not None:
                body["usage"] = usage
            return body

        return chunk

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy):
        message = f"the server is busy ({max_queue} requests waiting); retry in {exc.retry_after} s"
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

    @app.get("/health")
    async def health():
        """What runs and waits now, and how many requests completed or were cancelled so far."""
        if decoder is not None:
            running = len({id(r.handle) for r in decoder.rows})
            waiting = len(decoder.waiting) + batcher.waiting
        else:
            running, waiting = None, batcher.waiting
        return {
            "status": "ok",
            "continuous_batching": decoder is not None,
            "running": running,
            "waiting": waiting,
            **stats,
        }

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

    def streaming(req, sampling: Sampling) -> bool:
        if req.stream and sampling.logprobs:
            raise HTTPException(400, "logprobs are not streamed: ask without stream")
        return req.stream

    def wants_usage(req) -> bool:
        return bool((req.stream_options or {}).get("include_usage"))

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request):
        check(req.model, chat, CHAT)
        max_tokens = req.max_completion_tokens or req.max_tokens or 256
        sampling = _sampling(req, max_tokens, logprobs=req.logprobs)
        conv = _conversation(req.messages)
        if streaming(req, sampling):
            chunk = chunker("chatcmpl", "chat.completion.chunk")
            return streamed(request, "chat", [conv], sampling, chunk, wants_usage(req))
        (result,) = await generated(request, "chat", [conv], sampling)
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
        if streaming(req, sampling):
            chunk = chunker("cmpl", "text_completion")
            return streamed(request, "complete", prompts, sampling, chunk, wants_usage(req))
        results = await generated(request, "complete", prompts, sampling)
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
