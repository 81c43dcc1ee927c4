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

import orjson
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


# Every failure an OpenAI-compatible server can give, once each before the request succeeds, and one that
# never does. The i-th distinct request gets CHAOS_PLAN[i % len(CHAOS_PLAN)]: any 10 distinct requests see
# them all, whatever order they arrive in.
CHAOS_PLAN = (
    "ok",
    "429",  # with Retry-After: 0
    "429-bare",  # without Retry-After: the client backs off on its own
    "500",
    "garble",  # not JSON at all
    "cut",  # the answer's JSON cut off half way
    "hang",  # past the client's timeout
    "empty",  # a 200 with no choices
    "null",  # a 200 whose message has no content
    "always",  # a 500 on every attempt: fails for good
)


class Chaos:
    """State of a chaos server: the plan each distinct request got, and its attempts."""

    def __init__(self, reply, hang_s: float, retries: int):
        self.reply, self.hang_s, self.retries = reply, hang_s, retries
        self.plan: dict[str, str] = {}
        self.attempts: Counter = Counter()

    @property
    def served(self) -> set[str]:
        """The plans that were served (each distinct request got one)."""
        return set(self.plan.values())

    @property
    def failed_for_good(self) -> int:
        """Requests that exhausted their retries (each took retries + 1 attempts)."""
        return sum(self.attempts[k] // (self.retries + 1) for k, p in self.plan.items() if p == "always")


def create_chaos_app(reply, hang_s: float = 1.0, retries: int = 2) -> FastAPI:
    """A server that answers ``reply(text of the last message or the prompt)`` after the failure its plan
    gives each distinct request (CHAOS_PLAN). ``app.state.chaos`` says what it did."""
    app = FastAPI()
    chaos = app.state.chaos = Chaos(reply, hang_s, retries)

    async def respond(key: str, body: dict):
        plan = chaos.plan.setdefault(key, CHAOS_PLAN[len(chaos.plan) % len(CHAOS_PLAN)])
        chaos.attempts[key] += 1
        first = chaos.attempts[key] == 1
        if plan == "always":
            return PlainTextResponse("boom", 500)
        if first and plan in ("429", "429-bare", "500"):
            headers = {"Retry-After": "0"} if plan == "429" else {}
            return PlainTextResponse(f"error {plan}", int(plan[:3]), headers=headers)
        if first and plan == "garble":
            return PlainTextResponse("<html>bad gateway</html>", 200, media_type="application/json")
        if first and plan == "cut":
            text = orjson.dumps(body).decode()
            return PlainTextResponse(text[: len(text) // 2], 200, media_type="application/json")
        if first and plan == "hang":
            await asyncio.sleep(chaos.hang_s)
        if first and plan == "empty":
            return {**body, "choices": []}
        if first and plan == "null":
            choice = dict(body["choices"][0])
            if "message" in choice:
                choice["message"] = {"role": "assistant", "content": None}
            else:
                choice["text"] = None
            return {**body, "choices": [choice]}
        return body

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        text = body["messages"][-1]["content"]
        n = body.get("n", 1)
        reply = {
            **answer(""),
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": chaos.reply(text)},
                    "finish_reason": "stop",
                }
                for i in range(n)
            ],
        }
        return await respond(orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode(), reply)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        reply = text_answer("")
        reply["choices"][0]["text"] = chaos.reply(body["prompt"])
        return await respond(orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode(), reply)

    return app
