from __future__ import annotations

import textwrap
import time

import pytest

from dataflywheel.models.base import Sampling
from dataflywheel.models.openai import OpenAIBackend, retry_after
from tests import fault_server
from tests.conftest import write_jsonl


@pytest.fixture(scope="module")
def server():
    srv = fault_server.ServerThread(fault_server.create_app(hang_s=1.5)).start()
    yield srv
    srv.stop()


def backend(server, **kw) -> OpenAIBackend:
    args = dict(max_concurrency=4, timeout_s=0.5, max_retries=3, backoff_base=0.01, backoff_max=0.05)
    args.update(kw)
    return OpenAIBackend("fault", server.url, **args)


def test_every_request_is_answered_or_marked_failed_with_retries_counted(server):
    fault_server.attempts.clear()
    texts = ["ok", "429x2", "500x1", "garblex1", "hangx1", "always500", "bad400", "503x3"]
    results = backend(server).chat([[{"role": "user", "content": t}] for t in texts], Sampling())
    by = dict(zip(texts, results, strict=True))
    for t in ("ok", "429x2", "500x1", "garblex1", "hangx1", "503x3"):
        assert by[t].error is None and by[t].text == f"echo: {t}", (t, by[t])
    assert [by[t].retries for t in ("ok", "429x2", "500x1", "garblex1", "hangx1", "503x3")] == [
        0,
        2,
        1,
        1,
        1,
        3,
    ]
    assert "HTTP 500" in by["always500"].error and "after 3 retries" in by["always500"].error
    assert by["always500"].retries == 3 and fault_server.attempts["always500"] == 4
    assert "HTTP 400" in by["bad400"].error and fault_server.attempts["bad400"] == 1  # not retried
    assert by["ok"].prompt_tokens == 3 and by["ok"].completions[0].tokens == 2


def test_timeouts_are_retried_then_recorded(server):
    fault_server.attempts.clear()
    (r,) = backend(server, max_retries=0).chat([[{"role": "user", "content": "hangx5"}]], Sampling())
    assert r.error is not None and "timed out" in r.error


def test_unreachable_server_is_a_recorded_failure():
    dead = OpenAIBackend(
        "m", f"http://127.0.0.1:{fault_server.free_port()}/v1", max_retries=1, backoff_base=0.01
    )
    (r,) = dead.chat([[{"role": "user", "content": "hi"}]], Sampling())
    assert "connection error" in r.error


def test_retry_after_header_forms():
    assert retry_after("2") == 2.0
    assert retry_after(None) is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait
    assert retry_after("soon") is None


def test_api_key_comes_from_the_named_variable(monkeypatch, server):
    with pytest.raises(Exception, match="MY_KEY"):
        OpenAIBackend("m", server.url, api_key_env="MY_KEY")
    monkeypatch.setenv("MY_KEY", "sk-secret")
    b = OpenAIBackend("m", server.url, api_key_env="MY_KEY")
    assert b._headers["Authorization"] == "Bearer sk-secret"
    assert "sk-secret" not in b.fingerprint


def test_a_recipe_records_failures_on_rows_and_in_the_manifest(server, tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_CACHE", str(tmp_path / "calls.sqlite"))
    monkeypatch.setenv("FAULT_KEY", "sk-do-not-log")
    fault_server.attempts.clear()
    prompts = ["ok", "429x1", "always500", "fine", "bad400"]
    write_jsonl(tmp_path / "p.jsonl", [{"instruction": p} for p in prompts])
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent(f"""
        version: 1
        name: faults
        inputs: [{{path: p.jsonl}}]
        models:
          teacher: {{backend: openai, model: fault, base_url: "{server.url}", max_retries: 2, timeout_s: 2,
                     api_key_env: FAULT_KEY}}
        steps:
          - generate: {{model: teacher}}
    """)
    )
    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.engine.runinfo import load_manifest
    from dataflywheel.recipe.validate import validate_file

    recipe, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems
    start = time.time()
    result = LocalExecutor(recipe, ops, tmp_path / "run", progress=False).run()
    assert time.time() - start < 60
    import orjson

    rows = [orjson.loads(line) for line in result.output_path.read_bytes().splitlines()]
    assert len(rows) == 5  # nothing lost
    by = {r["messages"][0]["content"]: r for r in rows}
    assert by["ok"]["messages"][-1]["content"] == "echo: ok" and by["ok"]["error_generate"] is None
    assert "HTTP 500" in by["always500"]["error_generate"] and len(by["always500"]["messages"]) == 1
    assert "HTTP 400" in by["bad400"]["error_generate"]
    usage = load_manifest(tmp_path / "run")["steps"][1]["stats"]["models"]["teacher"]
    assert usage["failed"] == 2 and usage["requests"] == 5 and usage["retries"] == 1 + 2
    for f in (tmp_path / "run").rglob("*"):
        if f.is_file():
            assert b"sk-do-not-log" not in f.read_bytes(), f


def test_a_200_with_no_choices_or_no_text_is_retried_then_recorded_never_cached(server, tmp_path):
    from dataflywheel.models.cache import CallCache
    from dataflywheel.models.client import Model
    from dataflywheel.recipe.models import ModelSpec

    fault_server.attempts.clear()
    texts = ["emptyx1", "nullx2", "blankx1", "emptyx9", "nullx9"]
    results = backend(server).chat([[{"role": "user", "content": t}] for t in texts], Sampling())
    by = dict(zip(texts, results, strict=True))
    for t, retries in (("emptyx1", 1), ("nullx2", 2), ("blankx1", 1)):
        assert by[t].error is None and by[t].text == f"echo: {t}" and by[t].retries == retries
    assert "no choices" in by["emptyx9"].error and "after 3 retries" in by["emptyx9"].error
    assert "no content" in by["nullx9"].error and fault_server.attempts["nullx9"] == 4
    # through a named model: the failure is counted and not cached, so the next call asks again
    spec = ModelSpec(backend="openai", model="fault", base_url=server.url)
    model = Model("m", spec, CallCache(str(tmp_path / "c.sqlite")), backend=backend(server))
    (first,) = model.chat([[{"role": "user", "content": "emptyx99"}]])
    (again,) = model.chat([[{"role": "user", "content": "emptyx99"}]])
    assert first.error and again.error and model.usage.failed == 2 and model.usage.cached == 0
    assert fault_server.attempts["emptyx99"] == 8  # 4 attempts each: the failure was not served from cache


def test_a_rerun_with_retry_failed_asks_the_failed_calls_again_and_redoes_the_steps_after(server, tmp_path):
    import orjson

    from dataflywheel.cli import summary_table
    from dataflywheel.engine.local import LocalExecutor
    from dataflywheel.models.client import Model
    from dataflywheel.recipe.validate import validate_file

    fault_server.attempts.clear()
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": t} for t in ("fine", "emptyx4", "also fine")])
    (tmp_path / "r.yaml").write_text(
        textwrap.dedent(f"""
        version: 1
        name: retry
        shard_size: 1
        inputs: [{{path: seeds.jsonl}}]
        models: {{m: {{backend: openai, model: fault, base_url: '{server.url}', max_retries: 3}}}}
        steps:
          - generate: {{model: m}}
          - text_stats: {{fields: [response]}}
        """)
    )
    rec, ops, problems = validate_file(tmp_path / "r.yaml")
    assert not problems, problems

    def run(**kw):
        loader = lambda r: {"m": Model("m", r.models["m"], backend=backend(server))}  # noqa: E731
        return LocalExecutor(rec, ops, tmp_path / "run", progress=False, model_loader=loader, **kw).run()

    def answers(result):
        rows = [orjson.loads(x) for x in result.output_path.read_bytes().splitlines()]
        return [
            r["messages"][-1]["content"] if r["messages"][-1]["role"] == "assistant" else None for r in rows
        ]

    first = run()
    assert answers(first)[1] is None and first.steps[1].stats["counts"]["failed_calls"] == 1
    table = summary_table(first)
    failed = next(c for c in table.columns if c.header == "failed")
    assert list(failed._cells)[1] == "1"
    assert [s.status for s in run().steps] == ["reused"] * 3  # without the flag a rerun reuses the steps
    again = run(retry_failed=True)  # the 5th attempt of "emptyx4" succeeds
    assert [s.status for s in again.steps] == ["reused", "resumed", "computed"]
    assert answers(again) == ["echo: fine", "echo: emptyx4", "echo: also fine"]
    assert fault_server.attempts["fine"] == 1  # the call that had succeeded was not asked again


def test_raw_completions_retry_the_same_faults_and_record_what_stays_broken(server):
    fault_server.attempts.clear()
    prompts = ["ok", "429x2", "emptyx1", "blankx1", "nullx9", "always500"]
    results = backend(server).complete(prompts, Sampling())
    by = dict(zip(prompts, results, strict=True))
    for t, retries in (("ok", 0), ("429x2", 2), ("emptyx1", 1), ("blankx1", 1)):
        assert by[t].error is None and by[t].text == f"echo: {t}" and by[t].retries == retries
    assert "no text" in by["nullx9"].error and fault_server.attempts["nullx9"] == 4
    assert "HTTP 500" in by["always500"].error
