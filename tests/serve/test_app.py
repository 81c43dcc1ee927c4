"""The serve app with a scripted model (no weights): OpenAI-shaped errors, roles, the key rules."""

from __future__ import annotations

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from dataflywheel.cli import app as cli
from dataflywheel.serve.batcher import Batcher, Busy
from dataflywheel.serve.server import create_app
from tests.fakes import ScriptedBackend

KEY = "k-1"


def client(api_key=KEY) -> tuple[TestClient, ScriptedBackend]:
    lm = ScriptedBackend(default=lambda conv: "|".join(m["role"] for m in conv))
    return TestClient(create_app("smol", lm, api_key=api_key)), lm


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_errors_have_openai_shape():
    c, _ = client()
    r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = c.post(
        "/v1/chat/completions",
        headers=AUTH,
        json={"model": "other", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 404 and "'other' is not served here" in r.json()["error"]["message"]
    r = c.post("/v1/chat/completions", headers=AUTH, json={"messages": []})
    err = r.json()["error"]
    assert r.status_code == 400 and err["type"] == "invalid_request_error" and err["param"] == "messages"


def test_unknown_roles_are_rejected_and_developer_is_system():
    c, lm = client()
    bad = {"messages": [{"role": "wizard", "content": "hi"}]}
    r = c.post("/v1/chat/completions", headers=AUTH, json=bad)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.role"
    assert lm.calls == []  # never reached the model
    ok = {"messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    r = c.post("/v1/chat/completions", headers=AUTH, json=ok)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "system|user"


def test_serving_beyond_loopback_needs_a_key_or_insecure(monkeypatch):
    monkeypatch.delenv("FLYWHEEL_API_KEY", raising=False)
    result = CliRunner().invoke(cli, ["serve", "embedded:smollm2-135m-instruct", "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "without an API key" in result.output
    result = CliRunner().invoke(cli, ["serve", "embedded:smollm2-135m-instruct", "--host", "example.org"])
    assert result.exit_code != 0 and "--insecure" in result.output


def test_a_full_queue_answers_429_with_retry_after():
    c = TestClient(create_app("smol", ScriptedBackend(default="hi"), api_key=KEY, max_queue=0))
    r = c.post("/v1/chat/completions", headers=AUTH, json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error"


def test_batcher_bounds_its_queue_and_skips_cancelled_requests():
    release, ran = threading.Event(), []

    def run(key, items):
        release.wait(10)
        ran.extend(items)
        return items

    b = Batcher(run, max_batch=1, max_queue=2)
    first = b.submit("k", "a")
    deadline = time.monotonic() + 5
    while b.waiting and time.monotonic() < deadline:  # the worker takes "a" and blocks in run
        time.sleep(0.01)
    waiting = [b.submit("k", "b"), b.submit("k", "c")]
    with pytest.raises(Busy) as e:
        b.submit("k", "d")
    assert e.value.retry_after >= 1
    assert waiting[0].cancel()  # its client went away before its batch started
    release.set()
    assert first.result(5) == "a" and waiting[1].result(5) == "c"
    assert ran == ["a", "c"] and b.skipped == 1


def test_streaming_on_a_backend_without_continuous_batching_sends_the_whole_answer_then_done():
    c, _ = client()
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    r = c.post("/v1/chat/completions", headers=AUTH, json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: ") :] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e)["choices"][0] for e in events[:-1]]
    assert chunks[0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(ch["delta"].get("content", "") for ch in chunks) == "user"
    assert chunks[-1]["finish_reason"] == "stop"
