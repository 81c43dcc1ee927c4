"""The serve app with a scripted model (no weights): OpenAI-shaped errors, roles, the key rules."""

from __future__ import annotations

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from dataflywheel.cli import app as cli
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
