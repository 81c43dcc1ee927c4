"""recipes/flywheel.yaml on the real SmolLM2: each iteration's data is made by the policy the iteration
before trained, the value curve holds every iteration's metrics and cost, any output row traces back to
its seed tasks, and round 2's win rate against round 1's policy is recomputed from the two checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_the_flywheel_recipe_feeds_each_round_the_model_the_round_before_trained(shipped_runs, smollm2):
    from dataflywheel.data import io
    from dataflywheel.data import schema as S
    from dataflywheel.engine.lineage import RowIndex
    from dataflywheel.models.base import Sampling
    from dataflywheel.models.hf import HFBackend
    from dataflywheel.ops import prompts
    from dataflywheel.ops.evaluate import judge as judge_module
    from dataflywheel.report import write_report

    run_dir, result = shipped_runs["flywheel"]
    assert result.exit_code == 0, result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    inner = [s for s in manifest["steps"] if s.get("iteration")]
    by = {(s["op"], s["iteration"]): s for s in inner}

    # round 1 generates with the declared policy, round 2 with round 1's checkpoint, and says so
    def made_by(it: int) -> set[str]:
        shards = sorted((run_dir / by[("self_instruct", it)]["dir"]).glob("shard-*.parquet"))
        return set(pq.read_table(shards, columns=["origin_model"]).column(0).to_pylist()) - {None}

    assert made_by(1) == {"policy"} and made_by(2) == {"policy@1"}

    # the value curve: both rounds, each with its held-out loss, its win rate against the round before
    # and what the round cost (tokens from the step records, seconds)
    curve = manifest["steps"][-1]["stats"]["curve"]
    assert [p["iteration"] for p in curve] == [1, 2]
    for p in curve:
        steps = [s for s in inner if s["iteration"] == p["iteration"]]
        tokens = sum(
            u["prompt_tokens"] + u["completion_tokens"]
            for s in steps
            for u in s["stats"].get("models", {}).values()
        )
        assert p["tokens"] == tokens > 0 and p["seconds"] > 0
        assert p["eval_nll.nll"] > 0 and p["eval_judge.judged"] + p["eval_judge.excluded"] == 4
        assert p["rows"] == by[("head", p["iteration"])]["rows_out"]

    # round 2's judgement, recomputed: policy@2's and policy@1's greedy answers to the first 4 held-out
    # prompts, judged by the frozen base model's next-token letters in both orders
    def checkpoint(it: int) -> HFBackend:
        # the recipe's policy decodes in bf16, and its checkpoints with it
        return HFBackend(
            str(run_dir / by[("sft", it)]["dir"] / "checkpoint"), device="cpu", generate_dtype="bfloat16"
        )

    rows = io.read_all(str(ROOT / "examples" / "demo_heldout.jsonl")).rows[:4]
    questions = [S.prompt_of(r[S.MESSAGES]) for r in rows]
    new, old = checkpoint(2), checkpoint(1)
    greedy = Sampling(max_tokens=32)
    a_new = [r.completions[0].text for r in new.chat(questions, greedy)]
    a_old = [r.completions[0].text for r in old.chat(questions, greedy)]
    template = prompts.load(judge_module.__file__, "judge_pairwise_letter.txt")
    prefs, outcomes = [], []
    for q, x, y in zip(questions, a_new, a_old, strict=True):
        text = q[-1]["content"]
        convs = [
            [{"role": "user", "content": prompts.fill(template, question=text, answer_a=x, answer_b=y)}],
            [{"role": "user", "content": prompts.fill(template, question=text, answer_a=y, answer_b=x)}],
        ]
        (a1, b1), (a2, b2) = smollm2.next_token_logprobs(convs, ["A", "B"])
        first = math.exp(a1) / (math.exp(a1) + math.exp(b1))
        second = math.exp(b2) / (math.exp(a2) + math.exp(b2))
        prefs.append((first + second) / 2)
        verdicts = ("A" if first > 0.5 else "B", "B" if second > 0.5 else "A")
        outcomes.append(judge_module.pairwise_outcome(*verdicts))
    metrics = by[("eval_judge", 2)]["stats"]["metrics"]
    assert metrics["preference"] == pytest.approx(sum(prefs) / 4, abs=1e-3)
    assert (metrics["wins"], metrics["ties"], metrics["losses"]) == tuple(
        outcomes.count(o) for o in ("win", "tie", "loss")
    )

    # every output row traces back to seed tasks it was shown
    seed_file = ROOT / "examples" / "seed_tasks.jsonl"
    seeds = {json.loads(line)["id"] for line in seed_file.read_text().splitlines()}
    index = RowIndex(run_dir)
    out = [json.loads(line) for line in Path(manifest["output"]["path"]).read_text().splitlines()]
    assert out
    for row in out:
        path = index.trace(row["id"])
        assert path[0].origin == "self_instruct" and path[0].iteration == 2
        assert {a.id for a in path[1:]} <= seeds and all(a.step == "00 read" for a in path[1:])
    html = write_report(run_dir).read_text()
    assert "Lineage of generated rows" in html and 'data-chart="loop:1:eval_judge.win_rate"' in html


@pytest.mark.slow
def test_the_flywheel_killed_mid_iteration_resumes_to_the_same_output(shipped_runs, tmp_path):
    """kill -9 while iteration 2 trains, then the same command again: iteration 1 and iteration 2's
    finished steps are reused, the rest is computed, and the output is byte-identical to the shipped
    recipe's uninterrupted run (the call cache of this test session replays its model calls)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    reference, _ = shipped_runs["flywheel"]
    recipe = ROOT / "recipes" / "flywheel.yaml"
    cmd = [sys.executable, "-m", "dataflywheel.cli", "run", str(recipe), "--run-dir", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [*cmd, "--quiet"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline, killed = time.time() + 600, False
    while time.time() < deadline and proc.poll() is None:
        if list((tmp_path / "run" / "steps").glob("01-loop-*/iter-02/*-sft-*")):
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    out = proc.communicate()[0].decode()
    assert killed, out
    assert not list((tmp_path / "run" / "steps").glob("01-loop-*/iter-02/*-sft-*/_done.json"))

    done = subprocess.run([*cmd, "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    status = {(s["op"], s.get("iteration")): s["status"] for s in manifest["steps"] if s.get("iteration")}
    assert {k: v for k, v in status.items() if k[1] == 1} == {k: "reused" for k in status if k[1] == 1}
    assert status[("self_instruct", 2)] == "reused" and status[("sft", 2)] == "computed"
    out_path = Path(manifest["output"]["path"])
    ref_manifest = json.loads((reference / "manifest.json").read_text())
    assert out_path.read_bytes() == Path(ref_manifest["output"]["path"]).read_bytes()


@pytest.mark.slow
def test_the_flywheel_runs_unchanged_with_its_judge_behind_an_openai_compatible_server(
    shipped_runs, tmp_path
):
    """The same steps with `judge` declared as an openai model (`flywheel serve` of the same SmolLM2 on
    loopback): the judge's option scores come through /v1/score instead of one next-token pass, equal to
    1e-5, so the run keeps the same rows, trains the same policy and writes the same rows. One iteration
    (the second repeats the first's steps), compared with the first iteration of the shipped run."""
    import os
    import subprocess
    import sys
    import time

    import httpx
    import yaml

    from tests.fault_server import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "dataflywheel.cli", "serve", "embedded:smollm2-135m-instruct"]
        + ["--port", str(port), "--name", "judge", "--device", "cpu"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"{url}/models").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.time() < deadline and server.poll() is None, "flywheel serve did not start"
                time.sleep(0.3)
        recipe = yaml.safe_load((ROOT / "recipes" / "flywheel.yaml").read_text())
        recipe["models"]["judge"] = {"backend": "openai", "model": "judge", "base_url": url}
        recipe["steps"][0]["loop"]["iterations"] = 1
        (tmp_path / "flywheel.yaml").write_text(
            yaml.safe_dump(recipe, sort_keys=False).replace("../examples/", f"{ROOT}/examples/")
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "dataflywheel.cli", "run", str(tmp_path / "flywheel.yaml")]
        done = subprocess.run(
            [*cmd, "--run-dir", str(tmp_path / "run"), "--quiet"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    judge = manifest["models"]["judge"]
    assert judge["requests"] > 0 and judge["failed"] == 0 and judge["cached"] == 0  # asked over HTTP
    reference, _ = shipped_runs["flywheel"]
    ref_manifest = json.loads((reference / "manifest.json").read_text())

    def first_iteration(run_dir: Path, steps: list[dict], op: str):
        (step,) = [s for s in steps if s["op"] == op and s.get("iteration") == 1]
        return step, pq.read_table(sorted((run_dir / step["dir"]).glob("shard-*.parquet"))).to_pylist()

    _, out = first_iteration(tmp_path / "run", manifest["steps"], "head")
    _, ref = first_iteration(reference, ref_manifest["steps"], "head")
    assert len(out) == 6 and [(r["id"], r["messages"]) for r in out] == [
        (r["id"], r["messages"]) for r in ref
    ]
    for a, b in zip(out, ref, strict=True):  # the judge's expected scores, to float noise
        for key in (k for k in b if k.startswith("score_") and isinstance(b[k], float)):
            assert a[key] == pytest.approx(b[key], abs=1e-4), key
    nll, _ = first_iteration(tmp_path / "run", manifest["steps"], "eval_nll")
    ref_nll, _ = first_iteration(reference, ref_manifest["steps"], "eval_nll")
    assert nll["stats"]["metrics"]["nll"] == ref_nll["stats"]["metrics"]["nll"]  # the same policy trained
