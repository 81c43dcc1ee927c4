"""kill -9 at a random point of every shipped recipe, then the same command again: the finished steps are
reused and the output is byte-identical to the uninterrupted run (the `shipped_runs` fixture's).

The point is drawn per recipe and seed: the run is killed once step k has started (k drawn among the
recipe's steps), after a further random delay within that step. One seed per recipe here;
``FLYWHEEL_KILL_SEEDS=N`` runs N (RELIABILITY.md gives the last sweep). The flywheel recipe, whose steps
sit inside a loop, has its own test (tests/test_flywheel_recipe.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import RECIPES, ROOT

pytestmark = pytest.mark.slow
NAMES = [r.stem for r in RECIPES if r.stem != "flywheel"]


def started_steps(run_dir: Path) -> list[Path]:
    return (
        sorted(p for p in (run_dir / "steps").glob("*") if p.is_dir()) if (run_dir / "steps").is_dir() else []
    )


@pytest.mark.parametrize("name", NAMES)
def test_a_shipped_recipe_killed_at_a_random_point_resumes_to_the_same_output(name, shipped_runs, tmp_path):
    reference, _ = shipped_runs[name]
    ref_manifest = json.loads((reference / "manifest.json").read_text())
    ref_output = Path(ref_manifest["output"]["path"]).read_bytes()
    steps = len(ref_manifest["steps"])
    recipe = ROOT / "recipes" / f"{name}.yaml"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for seed in range(int(os.environ.get("FLYWHEEL_KILL_SEEDS", "1"))):
        rng = random.Random(f"{name}/{seed}")
        k = rng.randrange(1, steps)  # killed while step k runs (0 is the read step)
        delay = rng.uniform(0, 0.3)
        run_dir = tmp_path / f"run-{seed}"
        cmd = [
            sys.executable,
            "-m",
            "dataflywheel.cli",
            "run",
            str(recipe),
            "--run-dir",
            str(run_dir),
            "--quiet",
        ]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and len(started_steps(run_dir)) <= k:
            time.sleep(0.02)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        log = proc.communicate()[0].decode()
        assert killed, f"{name}: the run ended before step {k} + {delay:.2f} s\n{log}"
        finished_before = [p.name for p in started_steps(run_dir) if (p / "_done.json").exists()]

        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        manifest = json.loads((run_dir / "manifest.json").read_text())
        status = {Path(s["dir"]).name: s["status"] for s in manifest["steps"]}
        assert all(status[d] == "reused" for d in finished_before), (status, finished_before)
        assert len(finished_before) >= k  # the steps before k had finished, and were not redone
        out = Path(manifest["output"]["path"]).read_bytes()
        assert out == ref_output, f"{name}, seed {seed}: killed in step {k}, the resumed output differs"
