"""A misbehaving OpenAI-compatible server for fault-injection tests.

The last user message decides what happens, attempt by attempt: ``ok`` answers at once; ``429x2`` answers
429 twice (with Retry-After: 0) and then succeeds; ``500x1``, ``garblex1`` (malformed JSON) and ``hangx1``
(sleeps past the client's timeout) likewise; ``always500`` never succeeds; ``bad400`` is a client error.
Every attempt is counted per message, so tests can check the retries. ``/v1/completions`` behaves the same,
keyed on the prompt.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections import Counter

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

attempts: Counter = Counter()


def answer(text: str) -> dict:
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "fault",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"echo: {text}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def text_answer(text: str) -> dict:
    """A raw-text completion (``/v1/completions``) of a prompt."""
    return {
        "id": "x",
        "object": "text_completion",
        "created": 0,
        "model": "fault",
        "choices": [{"index": 0, "text": f"echo: {text}", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def create_app(hang_s: float = 2.0) -> FastAPI:
    app = FastAPI()

    async def respond(text: str, ok, blank):
        attempts[text] += 1
        n = attempts[text]
        m = re.match(r"(\d+|garble|hang|empty|null|blank)x(\d+)", text)
        if text == "always500":
            return PlainTextResponse("boom", 500)
        if text == "bad400":
            return JSONResponse({"error": "bad request"}, 400)
        if m and n <= int(m.group(2)):
            kind = m.group(1)
            if kind == "garble":
                return PlainTextResponse('{"choices": [', 200, media_type="application/json")
            if kind == "empty":  # a 200 with no choices
                return {**ok(text), "choices": []}
            if kind in ("null", "blank"):  # a 200 whose choice has no text
                body = ok(text)
                blank(body["choices"][0], None if kind == "null" else "")
                return body
            if kind == "hang":
                await asyncio.sleep(hang_s)  # past the client's timeout
                return ok(text)
            headers = {"Retry-After": "0"} if kind == "429" else {}
            return PlainTextResponse(f"error {kind}", int(kind), headers=headers)
        return ok(text)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        return await respond(
            body["messages"][-1]["content"], answer, lambda c, v: c["message"].__setitem__("content", v)
        )

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        return await respond(body["prompt"], text_answer, lambda c, v: c.__setitem__("text", v))

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn in a background thread on 127.0.0.1, stopped by stop()."""

    def __init__(self, app, port: int | None = None):
        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def priced_teacher_app(
    answers: dict[str, str], prompt_tokens: int = 20, completion_tokens: int = 10
) -> FastAPI:
    """A well-behaved OpenAI-compatible teacher: the answer of the first key found in the last message,
    with fixed token counts per call (so a run's cost is its calls times the model's prices)."""
    app = FastAPI()
    calls: Counter = Counter()
    app.state.calls = calls

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        text = body["messages"][-1]["content"]
        key = next((k for k in answers if k in text), None)
        calls[key] += 1
        reply = answers[key] if key is not None else "I do not know."
        return {
            "id": "t",
            "object": "chat.completion",
            "created": 0,
            "model": "teacher",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    return app
